//! What the wflo-bus suites share: the broker's address, a bus per test, unique topics, reading
//! back what was sent, one event of every type. Each suite uses a part of it.
#![allow(dead_code)]

use futures::StreamExt;
use futures::future::BoxFuture;
use rust_decimal_macros::dec;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;
use wflo_bus::*;
use wflo_db::Db;

// ------------------------------------------------------------------ helpers

pub(crate) fn bootstrap() -> String {
    std::env::var("WFLO_TEST_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "WFLO_TEST_KAFKA_BOOTSTRAP is not set: run `cargo xtask itest wflo-bus` (it starts the \
             Kafka-API broker and exports it), or export it, e.g. 127.0.0.1:9092"
        )
    })
}

pub(crate) fn unique(name: &str) -> String {
    format!("t{}.{name}", Uuid::now_v7().simple())
}

pub(crate) async fn bus_at(addr: &str) -> Bus {
    Bus::connect(
        BusConfig::builder(addr)
            .client_id("wflo-bus-tests")
            .retry(RetryPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(2),
            })
            .build()
            .unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) async fn bus() -> Bus {
    bus_at(&bootstrap()).await
}

pub(crate) async fn topic(bus: &Bus, name: &str, partitions: i32) -> String {
    let t = unique(name);
    let created = bus
        .ensure_topics(&[TopicSpec::new(t.clone(), partitions)])
        .await
        .unwrap();
    assert_eq!(created, vec![t.clone()]);
    t
}

/// Reads every partition of `topic` from offset 0 until `n` records arrived (or panics).
pub(crate) async fn read_n(bus: &Bus, db: &Db, topic: &str, n: usize) -> Vec<Message> {
    let consumer = Consumer::new(
        bus.clone(),
        db.clone(),
        ConsumerConfig::builder("reader", topic).build().unwrap(),
    );
    let parts = consumer.partitions().await.unwrap();
    let mut streams = futures::stream::select_all(parts.iter().map(|p| consumer.stream(*p, 0)));
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, streams.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            Ok(Some(Err(e))) => eprintln!("fetch error (retrying): {e}"),
            Ok(None) => break,
            Err(_) => panic!("only {} of {n} records arrived on {topic}", out.len()),
        }
    }
    // Nothing more than expected.
    if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), streams.next()).await
    {
        panic!("unexpected extra record at offset {} of {topic}", m.offset);
    }
    out
}

/// Reads every partition of `topic` from offset 0 until `n` distinct event ids arrived, then
/// whatever duplicates follow within half a second.
pub(crate) async fn read_unique(bus: &Bus, db: &Db, topic: &str, n: usize) -> Vec<Message> {
    let consumer = Consumer::new(
        bus.clone(),
        db.clone(),
        ConsumerConfig::builder("reader", topic).build().unwrap(),
    );
    let parts = consumer.partitions().await.unwrap();
    let mut streams = futures::stream::select_all(parts.iter().map(|p| consumer.stream(*p, 0)));
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ids.len() < n {
        match tokio::time::timeout_at(deadline, streams.next()).await {
            Ok(Some(Ok(m))) => {
                ids.insert(m.envelope().unwrap().event_id);
                out.push(m);
            }
            Ok(Some(Err(e))) => eprintln!("fetch error (retrying): {e}"),
            Ok(None) => break,
            Err(_) => panic!("only {} of {n} events arrived on {topic}", ids.len()),
        }
    }
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), streams.next()).await
    {
        out.push(m);
    }
    out
}

pub(crate) fn sample_events() -> Vec<EventPayload> {
    let cost = CostPayload {
        model: Some("gpt-4o-mini".into()),
        prompt_tokens: 1200,
        completion_tokens: 300,
        cached_prompt_tokens: 1000,
        reasoning_tokens: 64,
        cost_usd: dec!(0.00042),
        total_cost_usd: dec!(1.23456789),
        budget_limit_usd: Some(dec!(2.00)),
        percentage: Some(dec!(61.7)),
        alert_type: Some(AlertType::Threshold50),
        scope: Some("execution".into()),
    };
    let approval = ApprovalPayload {
        approval_id: Some(wflo_types::ApprovalId::new()),
        step_id: Some("deploy".into()),
        decision: Some("REJECTED".into()),
        approver: Some("alice@example.com".into()),
        reason: Some("too risky".into()),
        risk_level: Some("CRITICAL".into()),
    };
    vec![
        EventPayload::WorkflowStatus(WorkflowStatusPayload {
            status: "FAILED".into(),
            previous_status: Some("RUNNING".into()),
            error: Some("step s2 failed".into()),
            total_cost_usd: Some(dec!(0.5)),
        }),
        EventPayload::StepStatus(StepStatusPayload {
            step_id: "s2".into(),
            step_type: Some("code".into()),
            status: "FAILED".into(),
            error: Some("exit 1".into()),
        }),
        EventPayload::CostRecorded(CostPayload {
            alert_type: None,
            ..cost.clone()
        }),
        EventPayload::BudgetAlert(cost),
        EventPayload::Sandbox(SandboxPayload {
            language: "python".into(),
            exit_code: Some(137),
            duration_ms: 5012,
            status: "timeout".into(),
            timed_out: true,
            oom_killed: false,
        }),
        EventPayload::ApprovalRequested(ApprovalPayload {
            decision: None,
            approver: None,
            ..approval.clone()
        }),
        EventPayload::ApprovalDecided(approval.clone()),
        EventPayload::ApprovalExpired(ApprovalPayload {
            reason: Some("timed out after 1h".into()),
            ..approval
        }),
        EventPayload::Audit(AuditPayload {
            actor: "bob".into(),
            action: "rollback".into(),
            resource: "execution/42".into(),
            details: json!({"snapshot": 3}),
            success: true,
        }),
    ]
}

/// A plain handler that records what it saw.
#[derive(Default)]
pub(crate) struct Collect {
    pub(crate) seen: Mutex<Vec<Event>>,
    pub(crate) reject_type: Option<EventType>,
}

impl Handler for Collect {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if self.reject_type.as_ref() == Some(&event.envelope.event_type) {
                return Err(HandlerError::Reject("this type is not handled here".into()));
            }
            self.seen.lock().unwrap().push(event.clone());
            Ok(())
        })
    }
}

pub(crate) async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port nobody listens on (now).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
