//! `wflo serve` as real processes: tokens from the command line, the command line as a client
//! of the server (no database credentials), and two server instances on one database where
//! the one driving a run is killed and the other takes the run over once its lease expired.
#![cfg(feature = "integration")]

mod common;

use common::{Guard, World, spawn};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

const GATED: &str = r#"
name: served
steps:
  - id: prepare
    kind: checkpoint
  - id: gate
    kind: approval
    depends_on: [prepare]
    message: "Ship it?"
    risk: high
    action: {deploy: v3}
    timeout_secs: 600
  - id: shipped
    kind: checkpoint
    depends_on: [gate]
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP request to the server; returns (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the server listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn json_of(body: &str) -> serde_json::Value {
    // A chunked body: take the JSON between the first `{`/`[` and the last `}`/`]`.
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map_or(body.len(), |i| i + 1);
    serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serve(w: &World, port: u16) -> Guard {
    let child = w
        .command(&["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wflo serve starts");
    let g = Guard(Some(child));
    wait_for(
        "the server to answer /healthz",
        Duration::from_secs(30),
        || {
            TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
                .filter(|_| http(port, "GET", "/healthz", None, None).0 == 200)
        },
    );
    g
}

fn token(w: &World, name: &str, role: &str) -> String {
    let r = w.run(&["tokens", "create", "--name", name, "--role", role]);
    r.expect_code(0);
    assert!(r.stderr.contains("shown this once"), "{}", r.stderr);
    let secret = r.stdout.trim().to_string();
    assert!(
        secret.starts_with("wflo_") && secret.len() == 69,
        "{secret}"
    );
    secret
}

fn execution(port: u16, token: &str, id: &str) -> serde_json::Value {
    let (status, body) = http(
        port,
        "GET",
        &format!("/api/v1/executions/{id}"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    json_of(&body)
}

#[test]
fn tokens_are_created_listed_and_revoked_from_the_command_line() {
    let w = World::new();
    let secret = token(&w, "alice", "approver");
    let r = w.run(&["tokens", "create", "--name", "bob", "--role", "root"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("viewer, approver, operator or admin"),
        "{}",
        r.stderr
    );
    let list = w.run(&["tokens", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("alice")
            && list.stdout.contains("approver")
            && list.stdout.contains("active")
    );
    assert!(!list.stdout.contains(&secret), "secrets are never listed");
    w.run(&["tokens", "revoke", "alice"]).expect_code(0);
    assert!(w.run(&["tokens", "list"]).stdout.contains("revoked"));
    w.run(&["tokens", "revoke", "alice"]).expect_code(2);
}

#[test]
fn the_command_line_runs_and_approves_through_the_server_without_database_credentials() {
    let w = World::new();
    let ops = token(&w, "ops", "operator");
    let alice = token(&w, "alice", "approver");
    let port = free_port();
    let _server = serve(&w, port);
    let file = w.file("served.yaml", GATED);
    let url = format!("http://127.0.0.1:{port}");
    // The clients hold no database URL that works.
    let client = |token: &str| {
        World::new()
            .env(
                "DATABASE_URL",
                "postgres://nobody:wrong@127.0.0.1:1/nothing",
            )
            .env("WFLO_SERVER_URL", url.clone())
            .env("WFLO_TOKEN", token)
    };
    let operator = client(&ops);
    let mut run = Guard(Some(spawn(&operator, &["run", &file])));
    let approver = client(&alice);
    let approval = wait_for("the approval to be listed", Duration::from_secs(30), || {
        let list = approver.run(&["approvals", "list"]);
        list.expect_code(0);
        list.stdout
            .lines()
            .find(|l| l.contains("Ship it?"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
    });
    let decided = approver.run(&[
        "approvals",
        "approve",
        &approval,
        "--reason",
        "release notes read",
    ]);
    decided.expect_code(0);
    assert!(
        decided.stdout.contains("as alice"),
        "the token's name is the actor: {}",
        decided.stdout
    );
    let again = approver.run(&["approvals", "reject", &approval, "--reason", "too late"]);
    again.expect_code(1);
    assert!(again.stderr.contains("already"), "{}", again.stderr);
    let out = common::output(run.take());
    out.expect_code(0);
    assert!(out.stdout.contains("done  shipped"), "{}", out.stdout);
    assert!(out.stdout.contains("COMPLETED"), "{}", out.stdout);
    let id = out.execution_id();
    let show = approver.run(&["executions", "show", &id]);
    show.expect_code(0);
    assert!(
        show.stdout.lines().any(|l| l.contains("APPROVED")
            && l.contains("alice")
            && l.contains("release notes read")),
        "the approval, who decided it and why: {}",
        show.stdout
    );
    assert!(
        show.stdout.contains("snapshots") && show.stdout.contains("rollbacks"),
        "the same sections as a local show: {}",
        show.stdout
    );
    approver.run(&["executions", "list"]).expect_code(0);
    approver
        .run(&["cost", "report", "--by", "day"])
        .expect_code(0);
    // A viewer's token cannot decide; a wrong token is refused; no server is exit 4.
    let viewer = client(&token(&w, "val", "viewer"));
    let r = viewer.run(&["approvals", "approve", &approval]);
    r.expect_code(2);
    assert!(r.stderr.contains("approver"), "{}", r.stderr);
    client("wflo_nope")
        .run(&["approvals", "list"])
        .expect_code(2);
    World::new()
        .env(
            "WFLO_SERVER_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("WFLO_TOKEN", "wflo_x")
        .run(&["approvals", "list"])
        .expect_code(4);
}

#[test]
fn a_second_server_takes_over_the_runs_of_one_that_died() {
    let w = World::new().env("WFLO_LEASE_TTL_SECS", "2");
    let ops = token(&w, "ops", "operator");
    let (pa, pb) = (free_port(), free_port());
    let mut a = serve(&w, pa);
    let _b = serve(&w, pb);
    let (status, body) = http(
        pa,
        "POST",
        "/api/v1/executions",
        Some(&ops),
        Some(&serde_json::json!({"yaml": GATED}).to_string()),
    );
    assert_eq!(status, 202, "{body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_string();
    let holder_a = wait_for(
        "instance A to drive the run",
        Duration::from_secs(20),
        || {
            let v = execution(pb, &ops, &id);
            (v["execution"]["status"] == "WAITING_APPROVAL")
                .then(|| {
                    v["execution"]["driver"]["holder"]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten()
        },
    );
    assert!(
        holder_a.starts_with("serve@") && holder_a.contains(&format!(":{}:", a.pid())),
        "{holder_a}"
    );
    // While A lives, B leaves the run alone (A renews its lease).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        execution(pb, &ops, &id)["execution"]["driver"]["holder"],
        serde_json::json!(holder_a)
    );

    let mut child = a.take();
    child.kill().unwrap(); // SIGKILL: no clean release.
    child.wait().unwrap();
    let holder_b = wait_for(
        "instance B to take the run over",
        Duration::from_secs(20),
        || {
            let v = execution(pb, &ops, &id);
            v["execution"]["driver"]["holder"]
                .as_str()
                .filter(|h| *h != holder_a)
                .map(str::to_string)
        },
    );
    assert!(holder_b.starts_with("serve@"), "{holder_b}");
    let approval = execution(pb, &ops, &id)["approvals"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = token(&w, "root", "admin");
    let (status, body) = http(
        pb,
        "POST",
        &format!("/api/v1/approvals/{approval}/decision"),
        Some(&admin),
        Some(r#"{"decision": "approve", "reason": "after the takeover"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let done = wait_for("the run to complete on B", Duration::from_secs(20), || {
        let v = execution(pb, &ops, &id);
        (v["execution"]["status"] == "COMPLETED").then_some(v)
    });
    let steps: Vec<_> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["prepare", "gate", "shipped"], "no step ran twice");
    assert_eq!(
        done["steps"][0]["attempts"],
        serde_json::json!(1),
        "the checkpoint before the crash was not redone"
    );
}
