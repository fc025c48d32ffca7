//! What the wflo-db conformance suites share: a definition, an execution and an approval request
//! to start from, an outbox row. Each suite uses a part of it.
#![allow(dead_code)]

use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;
use wflo_db::{
    Db, Executor, NewApproval, NewDefinition, NewExecution, NewOutboxEvent, RiskLevel,
    TimeoutPolicy,
};

pub(crate) async fn definition(db: &Db, name: &str) -> wflo_db::Definition {
    db.definitions()
        .create(NewDefinition {
            name: name.into(),
            version: None,
            description: Some("a test workflow".into()),
            definition: json!({"steps": [{"id": "plan", "kind": "llm"}]}),
        })
        .await
        .expect("create definition")
}

pub(crate) async fn execution(db: &Db) -> (wflo_db::Definition, wflo_db::Execution) {
    let def = definition(db, "wf").await;
    let exec = db
        .executions()
        .create(NewExecution::new(def.id, json!({"ticket": 42})))
        .await
        .expect("create execution");
    (def, exec)
}

pub(crate) fn approval(execution_id: wflo_db::ExecutionId) -> NewApproval {
    NewApproval {
        execution_id,
        step_key: Some("deploy".into()),
        message: "deploy to production?".into(),
        context: json!({"diff": "+1 line"}),
        risk_level: RiskLevel::High,
        action_fingerprint: "sha256:abc".into(),
        approver_group: Some("ops".into()),
        timeout_at: None,
        timeout_policy: TimeoutPolicy::Reject,
        escalate_to: None,
    }
}

/// An outbox row on `topic` keyed by `key`.
pub(crate) fn event(topic: &str, key: &str) -> NewOutboxEvent {
    NewOutboxEvent {
        event_id: Uuid::now_v7(),
        topic: topic.into(),
        key: Some(key.into()),
        payload: json!({"event_type": "workflow.status"}),
        headers: BTreeMap::from([("content-type".to_string(), "application/json".to_string())]),
    }
}
