//! The web page in a real browser (Debian's Chromium through ChromeDriver, which
//! `cargo xtask itest wflo-server` starts): an approver logs in, sees a pending approval
//! appear without reloading while a run waits, approves it with a reason and sees the run
//! complete with its cost; a viewer sees no approve button and a forged POST is refused.
//! Screenshots of each page are saved under `target/screenshots/` (their paths are printed).
#![cfg(feature = "integration")]

mod common;

use common::{GATE, Harness, harness};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use wflo_core::db::Backend;
use wflo_core::types::Role;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this suite with `cargo xtask itest wflo-server` (it starts chromedriver)")
    })
}

async fn browser() -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": var("WFLO_TEST_CHROMIUM"),
            // As root, Chromium needs --no-sandbox.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&var("WFLO_TEST_WEBDRIVER_URL"))
        .await
        .expect("a chromedriver session")
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

async fn log_in(c: &Client, h: &Harness, role: Role) {
    c.goto(&h.url("/login")).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&h.tokens[&role])
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_url(&url::Url::parse(&h.url("/ui/runs")).unwrap())
        .await
        .expect("the login lands on the runs page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_decides_in_the_browser_and_a_viewer_cannot() {
    let h = harness(Backend::Postgres).await;
    let c = browser().await;
    log_in(&c, &h, Role::Approver).await;
    shot(&c, "01-runs-empty").await;

    c.goto(&h.url("/ui/approvals")).await.unwrap();
    c.find(Locator::Css("#no-approvals"))
        .await
        .expect("an empty inbox says so");
    // A run starts elsewhere and waits: its approval appears here without a reload.
    let marker: String = c
        .execute(
            "window.wfloMarker = 'same page'; return window.wfloMarker;",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let id = h.start(GATE).await;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("form[data-approval]"))
        .await
        .expect("the pending approval appears while the page is open");
    // Let the run's later events (it now waits) refresh the list once more before typing.
    h.wait_status(&id, "WAITING_APPROVAL").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let form = c.find(Locator::Css("form[data-approval]")).await.unwrap();
    let still: serde_json::Value = c
        .execute("return window.wfloMarker || null;", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(marker), "the page was not reloaded");
    let text = c
        .find(Locator::Css("#live"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("Ship to staging?"), "{text}");
    assert!(text.contains("risk HIGH"), "{text}");
    shot(&c, "02-approvals-pending").await;

    form.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("checked the release notes")
        .await
        .unwrap();
    form.find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = h.wait_status(&id, "COMPLETED").await;
    assert_eq!(done["approvals"][0]["decided_by"], json!("approver"));
    assert_eq!(
        done["approvals"][0]["reason"],
        json!("checked the release notes")
    );
    let flash = c
        .find(Locator::Css(".flash"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flash.contains("approved by approver"), "{flash}");

    c.goto(&h.url(&format!("/ui/runs/{id}"))).await.unwrap();
    let page = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("COMPLETED") && page.contains("release"),
        "{page}"
    );
    assert!(page.contains("Cost $0"), "the run's cost is shown: {page}");
    assert!(page.contains("checked the release notes"), "{page}");
    shot(&c, "03-run-completed").await;
    c.goto(&h.url("/ui/runs")).await.unwrap();
    shot(&c, "04-runs").await;
    c.goto(&h.url("/ui/costs")).await.unwrap();
    c.find(Locator::Css("h1")).await.unwrap();
    shot(&c, "05-costs").await;
    c.goto(&h.url("/ui/budgets")).await.unwrap();
    shot(&c, "06-budgets").await;
    // On a phone.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&h.url(&format!("/ui/runs/{id}"))).await.unwrap();
    let overflow: serde_json::Value = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(true), "the run page fits a phone's width");
    shot(&c, "07-run-phone").await;
    c.set_window_size(1280, 900).await.unwrap();

    // A viewer: no approve button, and a POST without the page's CSRF token is refused.
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &h, Role::Viewer).await;
    let waiting = h.start(GATE).await;
    h.wait_status(&waiting, "WAITING_APPROVAL").await;
    let approval = h.json(Role::Viewer, "/api/v1/approvals").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.goto(&h.url("/ui/approvals")).await.unwrap();
    c.find(Locator::Css("[data-approval]"))
        .await
        .expect("the viewer sees the request");
    assert!(
        c.find_all(Locator::Css("button[value=approve]"))
            .await
            .unwrap()
            .is_empty(),
        "a viewer has no approve button"
    );
    shot(&c, "08-approvals-viewer").await;
    let forged = format!(
        "return fetch('/ui/approvals/{approval}', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'decision=approve&reason=forged'}}).then(r => r.status);"
    );
    let status = c.execute(&forged, vec![]).await.unwrap();
    assert_eq!(status, json!(403), "a forged POST is refused");
    let api = format!(
        "return fetch('/api/v1/approvals/{approval}/decision', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{decision: 'approve'}})}}).then(r => r.status);"
    );
    assert_eq!(c.execute(&api, vec![]).await.unwrap(), json!(403));
    let pending = h.json(Role::Viewer, "/api/v1/approvals").await;
    assert_eq!(
        pending[0]["status"],
        json!("PENDING"),
        "nothing was decided"
    );
    c.close().await.unwrap();
}
