//! `wflo approvals list|approve|reject`.

use crate::format::{Table, maybe_time, short, time};
use uuid::Uuid;
use wflo_core::db::Executor;

pub(crate) async fn list() -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let pending = wflo.db().approvals().pending().await?;
    if pending.is_empty() {
        println!("no pending approvals");
        return Ok(0);
    }
    let mut t = Table::new(&[
        "id",
        "execution",
        "step",
        "risk",
        "group",
        "times out",
        "created",
        "message",
    ]);
    for a in &pending {
        t.row(vec![
            a.id.to_string(),
            a.execution_id.to_string(),
            a.step_key.clone().unwrap_or_else(|| "-".into()),
            a.risk_level.to_string(),
            a.approver_group.clone().unwrap_or_else(|| "-".into()),
            maybe_time(a.timeout_at),
            time(a.created_at),
            short(&a.message, 60),
        ]);
    }
    print!("{}", t.render());
    println!("decide with `wflo approvals approve ID` or `wflo approvals reject ID --reason ...`");
    Ok(0)
}

pub(crate) async fn decide(
    id: Uuid,
    approve: bool,
    reason: Option<String>,
    approver: String,
) -> anyhow::Result<u8> {
    let config = super::config()?;
    let temporal = config.temporal_config()?;
    let wflo = super::connect(config).await?;
    if let Some(temporal) = temporal
        && signal_temporal_run(&wflo, temporal, id, approve, &reason, &approver).await?
    {
        return Ok(0);
    }
    let decided = wflo
        .engine()
        .decide(id, approve, &approver, reason)
        .await
        .map_err(|e| match e {
            wflo_core::RuntimeError::Db(wflo_core::db::Error::NotFound { .. }) => {
                crate::exit::coded(
                    crate::exit::USAGE,
                    format!("approval request {id} does not exist; `wflo approvals list` shows the pending ones"),
                )
            }
            wflo_core::RuntimeError::Db(wflo_core::db::Error::InvalidTransition { from, .. }) => {
                crate::exit::coded(
                    crate::exit::FAILED,
                    format!("approval request {id} was already decided ({from}); a decision is taken once"),
                )
            }
            other => anyhow::Error::new(other).context(format!("cannot decide approval {id}")),
        })?;
    println!(
        "{} approval {} (step {} of execution {}) as {}",
        if approve { "approved" } else { "rejected" },
        decided.id,
        decided.step_key.as_deref().unwrap_or("-"),
        decided.execution_id,
        approver
    );
    Ok(0)
}

/// When the approval's execution runs on Temporal, the decision is its workflow's `approve` or
/// `reject` signal (the workflow records it). Returns whether it was sent.
async fn signal_temporal_run(
    wflo: &wflo_core::Wflo,
    temporal: wflo_core::temporal::TemporalConfig,
    id: Uuid,
    approve: bool,
    reason: &Option<String>,
    approver: &str,
) -> anyhow::Result<bool> {
    use wflo_core::temporal::{ApprovalSignal, RunStatus, TemporalClient, wflo_workflow_id};
    let Ok(approval) = wflo.db().approvals().get(id).await else {
        // Unknown here: the database path below says so.
        return Ok(false);
    };
    let Ok(client) = TemporalClient::connect(temporal).await else {
        return Ok(false);
    };
    let workflow_id = wflo_workflow_id(approval.execution_id);
    match client.describe(&workflow_id).await {
        Ok(run) if run.status == RunStatus::Running => {}
        _ => return Ok(false),
    }
    let mut signal = ApprovalSignal::new(id, approver);
    if let Some(r) = reason {
        signal = signal.reason(r.clone());
    }
    if approve {
        client.wflo_approve(&workflow_id, signal).await?;
    } else {
        client.wflo_reject(&workflow_id, signal).await?;
    }
    println!(
        "{} approval {id} (step {} of execution {}) as {approver}: signalled temporal workflow {workflow_id}",
        if approve { "approved" } else { "rejected" },
        approval.step_key.as_deref().unwrap_or("-"),
        approval.execution_id,
    );
    Ok(true)
}
