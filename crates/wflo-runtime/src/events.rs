//! Events written to the outbox in the same transaction as the change they describe.

use serde_json::Value;
use wflo_db::NewOutboxEvent;
use wflo_types::ExecutionId;
use wflo_types::{
    ApprovalPayload, AuditPayload, EventEnvelope, EventPayload, RunLabels, SandboxPayload,
    StepStatusPayload, WorkflowStatusPayload,
};

/// The `source` of the events the runtime writes.
pub const SOURCE: &str = "wflo-runtime";

/// An outbox row for `payload` about an execution labelled `labels`.
pub(crate) fn outbox(
    payload: EventPayload,
    execution: ExecutionId,
    labels: &RunLabels,
) -> NewOutboxEvent {
    let env = EventEnvelope::new(SOURCE, payload)
        .with_execution(execution)
        .with_labels(labels);
    NewOutboxEvent::from_envelope(&env)
}

/// Writes the `approval.decided` event of `decided` in `tx`, labelled from its execution (read
/// in the same transaction); returns those labels for the events that follow it.
pub(crate) async fn write_decided(
    tx: &wflo_db::Tx,
    decided: &wflo_db::Approval,
) -> crate::Result<RunLabels> {
    use wflo_db::Executor;
    let exec = tx.executions().get(decided.execution_id).await?;
    let labels = labels_of(&exec);
    tx.outbox()
        .enqueue(outbox(approval(decided, true), exec.id, &labels))
        .await?;
    Ok(labels)
}

/// The labels of the run `exec` (its workflow, trace and correlation ids).
pub(crate) fn labels_of(exec: &wflo_db::Execution) -> RunLabels {
    RunLabels {
        workflow: exec.workflow_name.clone(),
        trace_id: exec.trace_id.clone(),
        correlation_id: exec.correlation_id.clone(),
    }
}

pub(crate) fn workflow_status(
    status: &str,
    previous: Option<&str>,
    error: Option<String>,
    cost: Option<rust_decimal::Decimal>,
) -> EventPayload {
    EventPayload::WorkflowStatus(WorkflowStatusPayload {
        status: status.to_string(),
        previous_status: previous.map(str::to_string),
        error,
        total_cost_usd: cost,
    })
}

pub(crate) fn step_status(
    step: &str,
    kind: &str,
    status: &str,
    error: Option<String>,
) -> EventPayload {
    EventPayload::StepStatus(StepStatusPayload {
        step_id: step.to_string(),
        step_type: Some(kind.to_string()),
        status: status.to_string(),
        error,
    })
}

pub(crate) fn sandbox(result: &wflo_sandbox::ExecutionResult) -> EventPayload {
    EventPayload::Sandbox(SandboxPayload {
        language: result.language.as_str().to_string(),
        exit_code: Some(result.exit_code),
        duration_ms: result.duration.as_millis() as u64,
        status: result.status.as_str().to_string(),
        timed_out: result.timed_out,
        oom_killed: result.oom_killed,
    })
}

pub(crate) fn approval(a: &wflo_db::Approval, decided: bool) -> EventPayload {
    let p = ApprovalPayload {
        approval_id: Some(a.id),
        step_id: a.step_key.clone(),
        decision: decided.then(|| a.status.to_string()),
        approver: a.decided_by.clone(),
        reason: a.decision_reason.clone(),
        risk_level: Some(a.risk_level.to_string()),
    };
    match (decided, a.status) {
        (false, _) => EventPayload::ApprovalRequested(p),
        (true, wflo_db::ApprovalStatus::Expired) => EventPayload::ApprovalExpired(p),
        (true, _) => EventPayload::ApprovalDecided(p),
    }
}

pub(crate) fn audit(
    actor: &str,
    action: &str,
    resource: String,
    details: Value,
    success: bool,
) -> EventPayload {
    EventPayload::Audit(AuditPayload {
        actor: actor.to_string(),
        action: action.to_string(),
        resource,
        details,
        success,
    })
}
