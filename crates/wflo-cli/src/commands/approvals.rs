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
    let wflo = super::connect(super::config()?).await?;
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
