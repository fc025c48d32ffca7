//! `wflo approvals list|approve|reject`.

use crate::format::{Table, maybe_time, short, time};
use wflo_core::db::Executor;
use wflo_core::types::ApprovalId;
use wflo_server::ApprovalView;

pub(crate) async fn list() -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let pending = wflo.db().approvals().pending().await?;
    print_pending(&pending.iter().map(ApprovalView::of).collect::<Vec<_>>());
    Ok(0)
}

/// The pending approval requests as a table (read from the database or from a server).
pub(crate) fn print_pending(pending: &[ApprovalView]) {
    if pending.is_empty() {
        println!("no pending approvals");
        return;
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
    for a in pending {
        t.row(vec![
            a.id.to_string(),
            a.execution_id.to_string(),
            a.step.clone().unwrap_or_else(|| "-".into()),
            a.risk.clone(),
            a.approver_group.clone().unwrap_or_else(|| "-".into()),
            maybe_time(a.deadline),
            time(a.created_at),
            short(&a.message, 60),
        ]);
    }
    print!("{}", t.render());
    println!("decide with `wflo approvals approve ID` or `wflo approvals reject ID --reason ...`");
}

pub(crate) async fn decide(
    id: ApprovalId,
    approve: bool,
    reason: Option<String>,
    approver: String,
) -> anyhow::Result<u8> {
    use wflo_core::{Delivery, Error, RuntimeError};
    let wflo = super::connect(super::config()?).await?;
    let decided = match wflo.decide_approval(id, approve, &approver, reason).await {
        Ok(d) => d,
        Err(Error::Db(wflo_core::db::Error::NotFound { .. })) => {
            return Err(crate::exit::coded(
                crate::exit::USAGE,
                format!(
                    "approval request {id} does not exist; `wflo approvals list` shows the pending ones"
                ),
            ));
        }
        Err(Error::Runtime(e @ RuntimeError::AlreadyDecided { .. })) => {
            return Err(crate::exit::coded(crate::exit::FAILED, e.to_string()));
        }
        Err(other) => {
            return Err(anyhow::Error::new(other).context(format!("cannot decide approval {id}")));
        }
    };
    let a = &decided.approval;
    println!(
        "{} approval {} (step {} of execution {}) as {}",
        if approve { "approved" } else { "rejected" },
        a.id,
        a.step_key.as_deref().unwrap_or("-"),
        a.execution_id,
        approver
    );
    match &decided.delivery {
        Delivery::Local => {}
        Delivery::Temporal {
            workflow_id,
            task_queue,
            pollers,
        } => {
            println!("signalled temporal workflow {workflow_id}");
            if super::live_pollers(pollers).is_empty() {
                println!(
                    "no worker is polling task queue {task_queue}: the decision is recorded and \
                     waits in the workflow's history; the run continues when a worker starts \
                     (`wflo worker` with the same TEMPORAL_* settings and database)"
                );
            }
        }
        Delivery::WorkflowClosed {
            workflow_id,
            status,
        } => {
            println!(
                "temporal workflow {workflow_id} is no longer running ({status:?}): the decision \
                 is recorded, and no run waits for it"
            );
        }
        _ => {}
    }
    Ok(0)
}
