//! `wflo rollback EXECUTION --to VERSION --reason R`.

use wflo_core::types::ExecutionId;

pub(crate) async fn rollback(
    execution: ExecutionId,
    to: i32,
    reason: String,
    by: String,
) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let outcome = wflo
        .engine()
        .rollback(execution, to, &reason, &by)
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot roll execution {execution} back to snapshot {to}"
            ))
        })?;
    println!(
        "rolled execution {execution} back to snapshot {} (rollback {})",
        outcome.snapshot_version, outcome.rollback_id
    );
    println!(
        "  steps undone: {}",
        if outcome.undone_steps.is_empty() {
            "none".into()
        } else {
            outcome.undone_steps.join(", ")
        }
    );
    println!(
        "  compensations run: {}",
        if outcome.compensations.is_empty() {
            "none".into()
        } else {
            outcome.compensations.join(", ")
        }
    );
    println!("  later snapshots superseded: {}", outcome.superseded);
    println!("continue it with `wflo run --resume {execution}`");
    Ok(0)
}
