//! The API suite, on PostgreSQL and SQLite: a real server on loopback, real tokens, real runs
//! on the in-process engine. `cargo xtask itest wflo-server`.
#![cfg(feature = "integration")]

mod common;

use common::{GATE, QUICK, expect_error, harness, harness_with};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::time::Duration;
use wflo_core::db::{Backend, Executor};
use wflo_core::types::Role;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token_and_readiness_checks_the_database(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let r = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = h.http.get(h.url("/readyz")).send().await.unwrap();
    let body = expect_error(r, StatusCode::UNAUTHORIZED, "unauthenticated", "/readyz").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wflo tokens create")
    );
    let ready = h.json(Role::Viewer, "/readyz").await;
    assert_eq!(ready["status"], json!("ready"));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_over_http_waits_for_an_approver_and_completes(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let r = h
        .post(
            Role::Operator,
            "/api/v1/executions",
            json!({"yaml": GATE, "inputs": {"target": "production"}, "budget_usd": "0.25", "correlation_id": "ticket-7"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let started: Value = r.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(started["engine"], json!("LOCAL"));
    assert_eq!(
        started["links"]["execution"],
        json!(format!("/api/v1/executions/{id}"))
    );

    let waiting = h.wait_status(&id, "WAITING_APPROVAL").await;
    assert_eq!(waiting["execution"]["budget_usd"], json!("0.25"));
    assert_eq!(waiting["execution"]["correlation_id"], json!("ticket-7"));
    assert_eq!(waiting["execution"]["driver"]["kind"], json!("held"));
    let pending = h.json(Role::Viewer, "/api/v1/approvals").await;
    let approval = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["execution_id"] == json!(id))
        .unwrap_or_else(|| panic!("the run's approval is pending: {pending:#}"))
        .clone();
    assert_eq!(approval["message"], json!("Ship to production?"));
    assert_eq!(approval["risk"], json!("HIGH"));
    let aid = approval["id"].as_str().unwrap();
    let decide = format!("/api/v1/approvals/{aid}/decision");

    // A viewer may look, not decide.
    let r = h
        .post(Role::Viewer, &decide, json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h
        .post(
            Role::Approver,
            &decide,
            json!({"decision": "approve", "reason": "checked the diff"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let decided: Value = r.json().await.unwrap();
    assert_eq!(decided["status"], json!("APPROVED"));
    assert_eq!(
        decided["decided_by"],
        json!("approver"),
        "the token's name is the actor"
    );
    assert_eq!(decided["reason"], json!("checked the diff"));
    // Decided once: a second decision, either way, is a conflict naming the first.
    let r = h
        .post(
            Role::Admin,
            &decide,
            json!({"decision": "reject", "reason": "too late"}),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::CONFLICT, "conflict", "a second decision").await;

    let done = h.wait_status(&id, "COMPLETED").await;
    let keys: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["prepare", "gate", "shipped"]);
    assert_eq!(done["approvals"][0]["decided_by"], json!("approver"));
    assert!(done["snapshots"].as_array().unwrap().len() >= 2);

    // The start is in the audit trail under the operator's name.
    let events = h
        .wflo
        .db()
        .outbox()
        .after(0, Some(&id), 1000)
        .await
        .unwrap();
    let start = events
        .iter()
        .find(|e| e.payload["event_type"] == json!("audit.action"))
        .expect("an audit event");
    assert_eq!(start.payload["payload"]["actor"], json!("operator"));
    assert_eq!(start.payload["payload"]["action"], json!("execution.start"));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_listed_by_filter_and_cursor(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let other = QUICK.replace("name: quick", "name: other");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(h.start(if i % 3 == 2 { &other } else { QUICK }).await);
    }
    for id in &ids {
        h.wait_status(id, "COMPLETED").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/executions?limit=3&cursor={c}"),
            None => "/api/v1/executions?limit=3".into(),
        };
        let page = h.json(Role::Viewer, &path).await;
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every execution once, newest first");

    let page = h
        .json(Role::Viewer, "/api/v1/executions?workflow=other")
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let page = h
        .json(
            Role::Viewer,
            "/api/v1/executions?status=completed&limit=200",
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    let page = h
        .json(
            Role::Viewer,
            "/api/v1/executions?since=2999-01-01T00:00:00Z",
        )
        .await;
    assert!(page["items"].as_array().unwrap().is_empty());

    for bad in [
        "/api/v1/executions?status=DONE",
        "/api/v1/executions?cursor=nope",
        "/api/v1/executions?limit=0",
        "/api/v1/executions?colour=red",
    ] {
        let r = h.get(Role::Viewer, bad).send().await.unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "invalid_input", bad).await;
    }
    let r = h
        .get(
            Role::Viewer,
            &format!("/api/v1/executions/{}", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_store_nothing(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, |b| b.body_limit(4096)).await;
    let url = h.url("/api/v1/executions");
    let op = &h.tokens[&Role::Operator];
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .header("content-type", "application/json")
                .body("{\"yaml\": "),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "malformed JSON",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"yaml": QUICK, "colour": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "unknown field",
        ),
        (
            h.http.post(&url).bearer_auth(op).json(&json!({"yaml": 42})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "wrong type",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .body(json!({"yaml": QUICK}).to_string()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "no content type",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"yaml": "x".repeat(10_000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "over the body limit",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"yaml": "name: [unclosed"})),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid YAML",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"yaml": QUICK, "inputs": {"nope": 1}})),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "undeclared input",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"yaml": QUICK, "budget_usd": "-1"})),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "negative budget",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"yaml": QUICK, "workflow": "quick"})),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "both a name and YAML",
        ),
        (
            h.http
                .post(&url)
                .bearer_auth(op)
                .json(&json!({"workflow": "never-stored"})),
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown stored workflow",
        ),
    ];
    for (req, want, kind, what) in cases {
        expect_error(req.send().await.unwrap(), want, kind, what).await;
    }
    assert_eq!(h.executions_count().await, 0, "nothing was stored");
    // A stored definition can be started by name.
    let first = h.start(QUICK).await;
    h.wait_status(&first, "COMPLETED").await;
    let r = h
        .post(
            Role::Operator,
            "/api/v1/executions",
            json!({"workflow": "quick", "version": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Every endpoint, every role: no token 401, a role below the endpoint's 403, at or above it
/// anything but 401/403.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_checks_the_role_of_its_token(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let id = h.start(GATE).await;
    h.wait_status(&id, "WAITING_APPROVAL").await;
    let aid = h.json(Role::Viewer, "/api/v1/approvals").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = h.start(QUICK).await;
    h.wait_status(&done, "COMPLETED").await;
    let missing = uuid::Uuid::now_v7();
    use reqwest::Method;
    let matrix: Vec<(Method, String, Option<Value>, Role)> = vec![
        (Method::GET, "/readyz".into(), None, Role::Viewer),
        (
            Method::GET,
            "/api/v1/openapi.json".into(),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/api/v1/executions".into(), None, Role::Viewer),
        (
            Method::GET,
            format!("/api/v1/executions/{id}"),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/api/v1/approvals".into(), None, Role::Viewer),
        (
            Method::GET,
            "/api/v1/costs?by=day".into(),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/api/v1/budgets".into(), None, Role::Viewer),
        (
            Method::POST,
            format!("/api/v1/approvals/{missing}/decision"),
            Some(json!({"decision": "approve"})),
            Role::Approver,
        ),
        (
            Method::POST,
            "/api/v1/executions".into(),
            Some(json!({"yaml": QUICK})),
            Role::Operator,
        ),
        (
            Method::POST,
            format!("/api/v1/executions/{missing}/cancel"),
            Some(json!({})),
            Role::Operator,
        ),
        (
            Method::POST,
            format!("/api/v1/executions/{done}/resume"),
            None,
            Role::Operator,
        ),
        (
            Method::POST,
            format!("/api/v1/executions/{done}/rollback"),
            Some(json!({"snapshot_version": 99, "reason": "matrix"})),
            Role::Operator,
        ),
        (Method::GET, "/api/v1/tokens".into(), None, Role::Admin),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "matrix", "role": "viewer"})),
            Role::Admin,
        ),
        (
            Method::DELETE,
            "/api/v1/tokens/nobody".into(),
            None,
            Role::Admin,
        ),
    ];
    let mut checked = 0;
    for (method, path, body, needed) in &matrix {
        let send = |token: Option<&str>| {
            let mut r = h.http.request(method.clone(), h.url(path));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            r.send()
        };
        let r = send(None).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        if checked == 0 {
            // (Once: unknown tokens count as failed logins, and five slow the address down.)
            let r = send(Some(
                "wflo_0000000000000000000000000000000000000000000000000000000000000000",
            ))
            .await
            .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with an unknown token"
            );
        }
        for role in Role::ALL {
            let r = send(Some(&h.tokens[role])).await.unwrap();
            let status = r.status();
            if role.allows(*needed) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            } else {
                let what = format!("{method} {path} as {role}");
                expect_error(r, StatusCode::FORBIDDEN, "forbidden", &what).await;
            }
            checked += 1;
        }
    }
    assert_eq!(checked, matrix.len() * 4);
    // The SSE endpoint too (its body never ends, so only the status is read).
    let r = h.http.get(h.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = h.get(Role::Viewer, "/api/v1/events").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let _ = aid;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_once(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let r = h
        .post(
            Role::Admin,
            "/api/v1/tokens",
            json!({"name": "temp", "role": "approver"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let secret = created["token"].as_str().unwrap().to_string();
    let stored = h.wflo.db().api_tokens().list().await.unwrap();
    assert!(
        stored
            .iter()
            .all(|t| format!("{t:?}").find(&secret).is_none()),
        "the secret is not stored"
    );
    let ok = h
        .http
        .get(h.url("/api/v1/approvals"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // The same name again is a conflict while the first is active.
    let r = h
        .post(
            Role::Admin,
            "/api/v1/tokens",
            json!({"name": "temp", "role": "viewer"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = h
        .http
        .delete(h.url("/api/v1/tokens/temp"))
        .bearer_auth(&h.tokens[&Role::Admin])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refused = h
        .http
        .get(h.url("/api/v1/approvals"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let listed = h.json(Role::Admin, "/api/v1/tokens").await;
    let temp = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == json!("temp"))
        .unwrap();
    assert!(temp["revoked_at"].is_string());
    assert!(temp.get("token").is_none());
}

fn session_cookie(resp: &reqwest::Response) -> String {
    let set = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    set.split(';').next().unwrap().to_string()
}

fn forge(token: &str, expires: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    m.update(format!("session:{expires}").as_bytes());
    let sig = hex::encode(m.finalize().into_bytes());
    format!("wflo_session={token}.{expires}.{}", &sig[..32])
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_need_a_valid_cookie_and_csrf_for_writes(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    // Pages without a session go to the login form.
    let r = h.http.get(h.url("/ui/approvals")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/login");
    let approver = h.tokens[&Role::Approver].clone();
    let r = h
        .http
        .post(h.url("/login"))
        .form(&[("token", approver.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let cookie = session_cookie(&r);
    let page = h
        .http
        .get(h.url("/ui/approvals"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Approvals") && html.contains("approver"));

    // A cookie whose expiry was changed, an expired one, and garbage are refused.
    let now = chrono::Utc::now().timestamp();
    let tampered = cookie.rsplitn(3, '.').collect::<Vec<_>>();
    let tampered = format!("{}.{}.{}", tampered[2], now + 999_999, tampered[0]);
    for bad in [
        tampered,
        forge(&approver, now - 10),
        "wflo_session=garbage".into(),
    ] {
        let r = h
            .http
            .get(h.url("/api/v1/approvals"))
            .header("cookie", &bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        let r = h
            .http
            .get(h.url("/ui/runs"))
            .header("cookie", &bad)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{bad}");
    }
    assert_eq!(
        h.http
            .get(h.url("/api/v1/approvals"))
            .header("cookie", forge(&approver, now + 600))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "a well-signed current cookie works (the test's forge matches the format)"
    );

    // Writes from a session need the page's CSRF token.
    let id = h.start(GATE).await;
    h.wait_status(&id, "WAITING_APPROVAL").await;
    let aid = h.json(Role::Viewer, "/api/v1/approvals").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h
        .http
        .post(h.url(&format!("/api/v1/approvals/{aid}/decision")))
        .header("cookie", &cookie)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF header");
    let r = h
        .http
        .post(h.url(&format!("/ui/approvals/{aid}")))
        .header("cookie", &cookie)
        .form(&[
            ("decision", "approve"),
            ("reason", "forged"),
            ("csrf", "0000"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a forged form");
    assert_eq!(
        h.wflo
            .db()
            .approvals()
            .get(aid.parse::<wflo_core::types::ApprovalId>().unwrap())
            .await
            .unwrap()
            .status,
        wflo_core::types::ApprovalStatus::Pending,
        "nothing was decided"
    );
    let html = h
        .http
        .get(h.url("/ui/approvals"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries a CSRF token")
        .to_string();
    let r = h
        .http
        .post(h.url(&format!("/ui/approvals/{aid}")))
        .header("cookie", &cookie)
        .form(&[
            ("decision", "approve"),
            ("reason", "looks right"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    h.wait_status(&id, "COMPLETED").await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_slowed_down(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    for i in 0..5 {
        let r = h
            .http
            .post(h.url("/login"))
            .form(&[("token", "wflo_wrong")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = h
        .http
        .post(h.url("/login"))
        .form(&[("token", "wflo_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // Even the right token waits: the address is slowed, not the token.
    let r = h
        .http
        .post(h.url("/login"))
        .form(&[("token", h.tokens[&Role::Viewer].as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Reads SSE events from a response until `until` matches one (or 20 s pass).
async fn read_events(
    resp: reqwest::Response,
    until: impl Fn(&str, &Value) -> bool,
) -> Vec<(i64, String, Value)> {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events within 20 s")
            .expect("the stream stays open")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                let v: Value = serde_json::from_str(&data).unwrap();
                let stop = until(&kind, &v);
                out.push((id, kind, v));
                if stop {
                    return out;
                }
            }
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_live_and_resume_after_the_last_event_id(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    // A stream of everything, opened before the run.
    let all = h.get(Role::Viewer, "/api/v1/events").send().await.unwrap();
    assert_eq!(all.status(), StatusCode::OK);
    let id = h.start(QUICK).await;
    let finished = |kind: &str, v: &Value| {
        kind == "workflow.status" && v["payload"]["status"] == json!("COMPLETED")
    };
    let live = read_events(all, finished).await;
    let mine: Vec<_> = live
        .iter()
        .filter(|(_, _, v)| v["execution_id"] == json!(id))
        .collect();
    assert!(mine.len() >= 5, "started, steps, completed: {live:?}");
    let ids: Vec<i64> = live.iter().map(|e| e.0).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "each event once, in order");

    // Resume one execution's stream after its second event: the rest, the same, once.
    let second = mine[1].0;
    let resumed = h
        .get(Role::Viewer, &format!("/api/v1/events?execution={id}"))
        .header("last-event-id", second.to_string())
        .send()
        .await
        .unwrap();
    let rest = read_events(resumed, finished).await;
    let want: Vec<i64> = mine.iter().map(|e| e.0).filter(|i| *i > second).collect();
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), want);
    let r = h
        .get(Role::Viewer, "/api/v1/events")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "a Last-Event-ID of words",
    )
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_resume_and_rollback_are_operations_with_an_actor(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let id = h.start(GATE).await;
    h.wait_status(&id, "WAITING_APPROVAL").await;
    let r = h
        .post(
            Role::Operator,
            &format!("/api/v1/executions/{id}/cancel"),
            json!({"reason": "wrong target"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = h.wait_status(&id, "CANCELLED").await;
    assert!(
        v["execution"]["error"]
            .as_str()
            .unwrap()
            .contains("wrong target")
    );
    // The cancelled run's driver let go: no lease is live for long, and nothing overwrote it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let v = h
        .json(Role::Viewer, &format!("/api/v1/executions/{id}"))
        .await;
    assert_eq!(v["execution"]["status"], json!("CANCELLED"));
    for (path, what) in [
        ("cancel", "cancel a cancelled"),
        ("resume", "resume a cancelled"),
    ] {
        let r = h
            .post(
                Role::Operator,
                &format!("/api/v1/executions/{id}/{path}"),
                json!({}),
            )
            .send()
            .await
            .unwrap();
        if path == "cancel" {
            assert_eq!(r.status(), StatusCode::OK, "{what} changes nothing");
        } else {
            assert_eq!(r.status(), StatusCode::CONFLICT, "{what}");
        }
    }
    let events = h
        .wflo
        .db()
        .outbox()
        .after(0, Some(&id), 1000)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.payload["event_type"] == json!("audit.action")
                && e.payload["payload"]["action"] == json!("execution.cancel")
                && e.payload["payload"]["actor"] == json!("operator"))
    );

    // Roll a completed run back to its first snapshot, then resume it to completion.
    let done = h.start(QUICK).await;
    h.wait_status(&done, "COMPLETED").await;
    let r = h
        .post(
            Role::Operator,
            &format!("/api/v1/executions/{done}/rollback"),
            json!({"snapshot_version": 1, "reason": "redo b"}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["undone_steps"], json!(["b"]));
    let v = h.wait_status(&done, "FAILED").await;
    assert_eq!(v["rollbacks"][0]["initiated_by"], json!("operator"));
    let r = h
        .post(
            Role::Operator,
            &format!("/api/v1/executions/{done}/resume"),
            json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    h.wait_status(&done, "COMPLETED").await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_and_budgets_are_reported(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness(backend).await;
    let r = h
        .post(
            Role::Operator,
            "/api/v1/executions",
            json!({"yaml": QUICK, "budget_usd": 0.5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.wait_status(&id, "COMPLETED").await;
    let budgets = h
        .json(Role::Viewer, "/api/v1/budgets?scope=execution:")
        .await;
    let b = budgets
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == json!(format!("execution:{id}")))
        .expect("the execution's budget");
    assert_eq!(b["limit_usd"], json!("0.5"));
    assert_eq!(b["utilisation"], json!(0.0));
    for by in ["model", "workflow", "day"] {
        let report = h
            .json(Role::Viewer, &format!("/api/v1/costs?by={by}"))
            .await;
        assert_eq!(report["by"], json!(by));
        assert_eq!(report["total"]["calls"], json!(0));
    }
    let r = h
        .get(Role::Viewer, "/api/v1/costs?by=colour")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "costs by colour",
    )
    .await;
    for page in [
        "/ui/runs",
        &format!("/ui/runs/{id}"),
        "/ui/costs",
        "/ui/budgets",
    ] {
        let login = h
            .http
            .post(h.url("/login"))
            .form(&[("token", h.tokens[&Role::Viewer].as_str())])
            .send()
            .await
            .unwrap();
        let cookie = session_cookie(&login);
        let r = h
            .http
            .get(h.url(page))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{page}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("<meta name=\"viewport\""),
            "{page} reads on a phone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let h = harness(Backend::Sqlite).await;
    let doc = h.json(Role::Viewer, "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], json!("3.1.0"));
    for path in [
        "/api/v1/executions",
        "/api/v1/executions/{id}",
        "/api/v1/approvals/{id}/decision",
        "/api/v1/events",
        "/api/v1/costs",
        "/api/v1/budgets",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    let status = &doc["components"]["schemas"]["ExecutionView"]["properties"]["status"]["enum"];
    assert!(
        status
            .as_array()
            .unwrap()
            .contains(&json!("WAITING_APPROVAL")),
        "statuses come from the vocabulary: {status}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 runs (cargo xtask itest installs openapi-spec-validator)");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
