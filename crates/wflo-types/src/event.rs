//! The event envelope every Wflo event travels in, and the typed payloads.
//!
//! The JSON shape is a contract shared with crates that write events to the outbox directly:
//! `schema_version`, `event_id` (UUIDv7), `event_type` (dotted), `occurred_at` (RFC 3339 UTC),
//! `source`, `execution_id`, `workflow_id`, `trace_id`, `correlation_id`, `payload`. Unknown
//! fields are ignored; an unknown `event_type` reads as [`EventPayload::Raw`], not an error.
//! Decimals are strings, never floats.

use crate::topic;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The envelope schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

fn schema_version_default() -> u32 {
    SCHEMA_VERSION
}

/// The kinds of events Wflo publishes, with their dotted names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// `workflow.status`
    WorkflowStatus,
    /// `step.status`
    StepStatus,
    /// `cost.recorded`
    CostRecorded,
    /// `cost.budget_alert`
    BudgetAlert,
    /// `sandbox.execution`
    SandboxExecution,
    /// `approval.requested`
    ApprovalRequested,
    /// `approval.decided`
    ApprovalDecided,
    /// `approval.expired`
    ApprovalExpired,
    /// `audit.action`
    AuditAction,
    /// A type this build does not know (kept as written).
    Other(String),
}

impl EventType {
    /// Every known type.
    pub const KNOWN: &'static [EventType] = &[
        EventType::WorkflowStatus,
        EventType::StepStatus,
        EventType::CostRecorded,
        EventType::BudgetAlert,
        EventType::SandboxExecution,
        EventType::ApprovalRequested,
        EventType::ApprovalDecided,
        EventType::ApprovalExpired,
        EventType::AuditAction,
    ];

    /// The dotted name.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::WorkflowStatus => "workflow.status",
            EventType::StepStatus => "step.status",
            EventType::CostRecorded => "cost.recorded",
            EventType::BudgetAlert => "cost.budget_alert",
            EventType::SandboxExecution => "sandbox.execution",
            EventType::ApprovalRequested => "approval.requested",
            EventType::ApprovalDecided => "approval.decided",
            EventType::ApprovalExpired => "approval.expired",
            EventType::AuditAction => "audit.action",
            EventType::Other(s) => s,
        }
    }

    /// The topic events of this type go to.
    pub fn default_topic(&self) -> &'static str {
        use topic as names;
        match self {
            EventType::WorkflowStatus => names::WORKFLOWS,
            EventType::StepStatus => names::STEPS,
            EventType::CostRecorded | EventType::BudgetAlert => names::COSTS,
            EventType::SandboxExecution => names::SANDBOX,
            EventType::ApprovalRequested
            | EventType::ApprovalDecided
            | EventType::ApprovalExpired => names::APPROVALS,
            EventType::AuditAction => names::AUDIT,
            EventType::Other(_) => names::METRICS,
        }
    }
}

impl From<String> for EventType {
    fn from(s: String) -> Self {
        EventType::KNOWN
            .iter()
            .find(|k| k.as_str() == s)
            .cloned()
            .unwrap_or(EventType::Other(s))
    }
}

impl From<EventType> for String {
    fn from(t: EventType) -> Self {
        t.as_str().to_string()
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(EventType::from)
    }
}

/// One event: metadata plus a type-specific payload (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Envelope schema version (1; absent reads as 1).
    #[serde(default = "schema_version_default")]
    pub schema_version: u32,
    /// The event's id, a UUIDv7 (consumers dedupe on it).
    pub event_id: Uuid,
    /// The dotted type.
    pub event_type: EventType,
    /// When it happened (UTC).
    pub occurred_at: DateTime<Utc>,
    /// The crate or service that emitted it, e.g. `wflo-cost`.
    #[serde(default)]
    pub source: String,
    /// The execution it concerns.
    #[serde(default)]
    pub execution_id: Option<crate::ExecutionId>,
    /// The workflow it concerns.
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// Distributed trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Correlation id (a request or a conversation).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Type-specific fields; see [`EventEnvelope::typed`].
    #[serde(default)]
    pub payload: Value,
}

/// What every event about one run carries besides its payload: the workflow's name and the
/// ids an embedder tagged the run with when starting it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLabels {
    /// The workflow's name.
    pub workflow: String,
    /// The distributed trace the run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The embedder's own tag (a request id, a ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl RunLabels {
    /// Labels naming `workflow`, with no trace or correlation id.
    pub fn workflow(name: impl Into<String>) -> RunLabels {
        RunLabels {
            workflow: name.into(),
            trace_id: None,
            correlation_id: None,
        }
    }
}

impl EventEnvelope {
    /// A new event (fresh UUIDv7, now) carrying `payload`.
    pub fn new(source: impl Into<String>, payload: EventPayload) -> EventEnvelope {
        let (event_type, payload) = payload.into_parts();
        EventEnvelope {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            event_type,
            occurred_at: Utc::now(),
            source: source.into(),
            execution_id: None,
            workflow_id: None,
            trace_id: None,
            correlation_id: None,
            payload,
        }
    }

    /// Sets the execution id (also the partition key).
    pub fn with_execution(mut self, id: impl Into<crate::ExecutionId>) -> Self {
        self.execution_id = Some(id.into());
        self
    }

    /// Sets the workflow id.
    pub fn with_workflow(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(id.into());
        self
    }

    /// Sets the trace id.
    pub fn with_trace(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the workflow, trace and correlation ids of the run it concerns.
    pub fn with_labels(mut self, labels: &RunLabels) -> Self {
        self.workflow_id = Some(labels.workflow.clone());
        self.trace_id.clone_from(&labels.trace_id);
        self.correlation_id.clone_from(&labels.correlation_id);
        self
    }

    /// The partition key: the execution id when there is one.
    pub fn key(&self) -> Option<String> {
        self.execution_id.map(|id| id.to_string())
    }

    /// The topic this event belongs to by its type.
    pub fn default_topic(&self) -> &'static str {
        self.event_type.default_topic()
    }

    /// The payload as its typed form; an unknown type gives [`EventPayload::Raw`]. A known type
    /// whose payload does not match its schema is [`Error::Malformed`].
    pub fn typed(&self) -> Result<EventPayload> {
        fn de<T: serde::de::DeserializeOwned>(t: &EventType, v: &Value) -> Result<T> {
            serde_json::from_value(v.clone())
                .map_err(|e| Error::Malformed(format!("payload of a {t} event: {e}")))
        }
        let t = &self.event_type;
        let v = &self.payload;
        Ok(match t {
            EventType::WorkflowStatus => EventPayload::WorkflowStatus(de(t, v)?),
            EventType::StepStatus => EventPayload::StepStatus(de(t, v)?),
            EventType::CostRecorded => EventPayload::CostRecorded(de(t, v)?),
            EventType::BudgetAlert => EventPayload::BudgetAlert(de(t, v)?),
            EventType::SandboxExecution => EventPayload::Sandbox(de(t, v)?),
            EventType::ApprovalRequested => EventPayload::ApprovalRequested(de(t, v)?),
            EventType::ApprovalDecided => EventPayload::ApprovalDecided(de(t, v)?),
            EventType::ApprovalExpired => EventPayload::ApprovalExpired(de(t, v)?),
            EventType::AuditAction => EventPayload::Audit(de(t, v)?),
            EventType::Other(name) => EventPayload::Raw {
                event_type: name.clone(),
                payload: v.clone(),
            },
        })
    }

    /// Serializes to JSON bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Malformed(format!("cannot encode: {e}")))
    }

    /// Parses JSON bytes (unknown fields are ignored).
    pub fn from_bytes(bytes: &[u8]) -> Result<EventEnvelope> {
        serde_json::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string().to_lowercase()))
    }

    /// As a JSON value (what the outbox stores).
    pub fn to_value(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| Error::Malformed(format!("cannot encode: {e}")))
    }
}

/// The typed payloads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventPayload {
    /// `workflow.status`
    WorkflowStatus(WorkflowStatusPayload),
    /// `step.status`
    StepStatus(StepStatusPayload),
    /// `cost.recorded`
    CostRecorded(CostPayload),
    /// `cost.budget_alert`
    BudgetAlert(CostPayload),
    /// `sandbox.execution`
    Sandbox(SandboxPayload),
    /// `approval.requested`
    ApprovalRequested(ApprovalPayload),
    /// `approval.decided`
    ApprovalDecided(ApprovalPayload),
    /// `approval.expired`
    ApprovalExpired(ApprovalPayload),
    /// `audit.action`
    Audit(AuditPayload),
    /// A type this build does not know.
    Raw {
        /// Its dotted type.
        event_type: String,
        /// Its payload as written.
        payload: Value,
    },
}

impl EventPayload {
    /// The event type and the JSON payload.
    pub fn into_parts(self) -> (EventType, Value) {
        fn v<T: Serialize>(t: &T) -> Value {
            // These payload types serialize to JSON infallibly (no maps with non-string keys).
            serde_json::to_value(t).unwrap_or(Value::Null)
        }
        match self {
            EventPayload::WorkflowStatus(p) => (EventType::WorkflowStatus, v(&p)),
            EventPayload::StepStatus(p) => (EventType::StepStatus, v(&p)),
            EventPayload::CostRecorded(p) => (EventType::CostRecorded, v(&p)),
            EventPayload::BudgetAlert(p) => (EventType::BudgetAlert, v(&p)),
            EventPayload::Sandbox(p) => (EventType::SandboxExecution, v(&p)),
            EventPayload::ApprovalRequested(p) => (EventType::ApprovalRequested, v(&p)),
            EventPayload::ApprovalDecided(p) => (EventType::ApprovalDecided, v(&p)),
            EventPayload::ApprovalExpired(p) => (EventType::ApprovalExpired, v(&p)),
            EventPayload::Audit(p) => (EventType::AuditAction, v(&p)),
            EventPayload::Raw {
                event_type,
                payload,
            } => (EventType::from(event_type), payload),
        }
    }
}

/// `workflow.status`: an execution changed status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowStatusPayload {
    /// New status (e.g. `RUNNING`, `COMPLETED`).
    pub status: String,
    /// Previous status.
    pub previous_status: Option<String>,
    /// Error text when failed.
    pub error: Option<String>,
    /// Cost so far.
    pub total_cost_usd: Option<Decimal>,
}

/// `step.status`: a step changed status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StepStatusPayload {
    /// The step's id within the workflow.
    pub step_id: String,
    /// The step's kind (llm, code, approval, ...).
    pub step_type: Option<String>,
    /// New status.
    pub status: String,
    /// Error text when failed.
    pub error: Option<String>,
}

/// Budget alert thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AlertType {
    /// 50 % of the budget used.
    #[serde(rename = "threshold_50")]
    Threshold50,
    /// 75 %.
    #[serde(rename = "threshold_75")]
    Threshold75,
    /// 90 %.
    #[serde(rename = "threshold_90")]
    Threshold90,
    /// 100 %.
    #[serde(rename = "threshold_100")]
    Threshold100,
}

/// `cost.recorded` and `cost.budget_alert`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CostPayload {
    /// The model priced.
    pub model: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_prompt_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// This call's cost.
    pub cost_usd: Decimal,
    /// Running total of the scope.
    pub total_cost_usd: Decimal,
    /// The budget's limit.
    pub budget_limit_usd: Option<Decimal>,
    /// Percentage of the budget used.
    pub percentage: Option<Decimal>,
    /// The threshold crossed (alerts).
    pub alert_type: Option<AlertType>,
    /// The budget scope.
    pub scope: Option<String>,
}

/// `sandbox.execution`: a code step ran.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxPayload {
    /// Language (e.g. `python`).
    pub language: String,
    /// Exit code, when the process exited.
    pub exit_code: Option<i64>,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// Outcome (`success`, `error`, `timeout`, `oom`).
    pub status: String,
    /// Killed by the wall-clock limit.
    pub timed_out: bool,
    /// Killed by the memory limit.
    pub oom_killed: bool,
}

/// `approval.requested`, `approval.decided`, `approval.expired`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalPayload {
    /// The approval request's id.
    pub approval_id: Option<crate::ApprovalId>,
    /// The step awaiting approval.
    pub step_id: Option<String>,
    /// Decision (`APPROVED`, `REJECTED`) when decided.
    pub decision: Option<String>,
    /// Who decided.
    pub approver: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Risk level of the action.
    pub risk_level: Option<String>,
}

/// `audit.action`: something was done by someone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditPayload {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub resource: String,
    /// Details.
    pub details: Value,
    /// Whether it succeeded.
    pub success: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use serde_json::json;

    fn samples() -> Vec<EventPayload> {
        let cost = CostPayload {
            model: Some("gpt-4o".into()),
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_prompt_tokens: 40,
            reasoning_tokens: 5,
            cost_usd: dec!(0.000123),
            total_cost_usd: dec!(1.5),
            budget_limit_usd: Some(dec!(2)),
            percentage: Some(dec!(75)),
            alert_type: Some(AlertType::Threshold75),
            scope: Some("exec".into()),
        };
        let approval = ApprovalPayload {
            approval_id: Some(crate::ApprovalId::new()),
            step_id: Some("deploy".into()),
            decision: Some("APPROVED".into()),
            approver: Some("alice".into()),
            reason: Some("looks fine".into()),
            risk_level: Some("HIGH".into()),
        };
        vec![
            EventPayload::WorkflowStatus(WorkflowStatusPayload {
                status: "RUNNING".into(),
                previous_status: Some("PENDING".into()),
                error: None,
                total_cost_usd: Some(dec!(0.10)),
            }),
            EventPayload::StepStatus(StepStatusPayload {
                step_id: "s1".into(),
                step_type: Some("llm".into()),
                status: "COMPLETED".into(),
                error: None,
            }),
            EventPayload::CostRecorded(cost.clone()),
            EventPayload::BudgetAlert(cost),
            EventPayload::Sandbox(SandboxPayload {
                language: "python".into(),
                exit_code: Some(137),
                duration_ms: 1200,
                status: "oom".into(),
                timed_out: false,
                oom_killed: true,
            }),
            EventPayload::ApprovalRequested(approval.clone()),
            EventPayload::ApprovalDecided(approval.clone()),
            EventPayload::ApprovalExpired(approval),
            EventPayload::Audit(AuditPayload {
                actor: "bob".into(),
                action: "rollback".into(),
                resource: "execution/1".into(),
                details: json!({"to": 3}),
                success: true,
            }),
        ]
    }

    #[test]
    fn every_type_round_trips() {
        for p in samples() {
            let e = EventEnvelope::new("wflo-test", p.clone()).with_execution(Uuid::now_v7());
            let back = EventEnvelope::from_bytes(&e.to_bytes().unwrap()).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.typed().unwrap(), p);
            assert_eq!(back.event_id.get_version_num(), 7);
        }
    }

    #[test]
    fn decimals_are_strings_and_shape_matches_the_contract() {
        let e = EventEnvelope::new(
            "wflo-cost",
            EventPayload::CostRecorded(CostPayload {
                cost_usd: dec!(0.1),
                ..Default::default()
            }),
        );
        let v = e.to_value().unwrap();
        assert_eq!(v["payload"]["cost_usd"], json!("0.1"));
        assert_eq!(v["event_type"], json!("cost.recorded"));
        assert_eq!(v["schema_version"], json!(1));
        for k in [
            "event_id",
            "occurred_at",
            "source",
            "execution_id",
            "workflow_id",
            "trace_id",
            "correlation_id",
            "payload",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }

    #[test]
    fn contract_json_written_by_other_crates_parses() {
        let raw = json!({
            "schema_version": 1,
            "event_id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "event_type": "cost.budget_alert",
            "occurred_at": "2026-11-25T10:00:00Z",
            "source": "wflo-cost",
            "execution_id": null,
            "workflow_id": "wf",
            "trace_id": null, "correlation_id": null,
            "future_field": {"x": 1},
            "payload": {"model": null, "prompt_tokens": 1, "completion_tokens": 2,
                "cached_prompt_tokens": 0, "reasoning_tokens": 0, "cost_usd": "0.5",
                "total_cost_usd": "1.75", "budget_limit_usd": "2", "percentage": "87.5",
                "alert_type": "threshold_75", "scope": "execution:1", "extra": true}
        });
        let e: EventEnvelope = serde_json::from_value(raw).unwrap();
        match e.typed().unwrap() {
            EventPayload::BudgetAlert(c) => {
                assert_eq!(c.total_cost_usd, dec!(1.75));
                assert_eq!(c.percentage, Some(dec!(87.5)));
                assert_eq!(c.alert_type, Some(AlertType::Threshold75));
            }
            other => panic!("wrong payload {other:?}"),
        }
    }

    #[test]
    fn schema_defaults_apply() {
        let e = EventEnvelope::from_bytes(
            br#"{"event_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","event_type":"step.status","occurred_at":"2026-11-25T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.schema_version, 1);
        assert_eq!(e.source, "");
        assert_eq!(e.execution_id, None);
        assert_eq!(e.payload, Value::Null);
        let p = EventEnvelope {
            payload: json!({}),
            ..e
        }
        .typed()
        .unwrap();
        assert_eq!(p, EventPayload::StepStatus(StepStatusPayload::default()));
        let s = SandboxPayload::default();
        assert!(!s.timed_out && !s.oom_killed && s.exit_code.is_none());
    }

    #[test]
    fn unknown_type_is_raw_and_bad_payload_is_malformed() {
        let mut e = EventEnvelope::new(
            "x",
            EventPayload::Raw {
                event_type: "model.swapped".into(),
                payload: json!({"a": 1}),
            },
        );
        assert_eq!(e.event_type, EventType::Other("model.swapped".into()));
        let back = EventEnvelope::from_bytes(&e.to_bytes().unwrap()).unwrap();
        assert!(matches!(back.typed().unwrap(), EventPayload::Raw { .. }));
        e.event_type = EventType::CostRecorded;
        e.payload = json!({"prompt_tokens": "many"});
        assert!(matches!(e.typed(), Err(Error::Malformed(_))));
        assert!(EventEnvelope::from_bytes(b"not json").is_err());
        assert!(EventEnvelope::from_bytes(br#"{"event_type":"x"}"#).is_err());
    }
}
