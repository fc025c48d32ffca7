//! `wflo executions list|show`.

use crate::format::{Table, maybe_time, percent, short, time, usd};
use std::collections::HashMap;
use std::str::FromStr;
use uuid::Uuid;
use wflo_core::db::{ExecutionStatus, Executor};
use wflo_core::types::{ExecutionId, StepKind, StepOutput, StepStatus};
use wflo_server::{DriverView, ExecutionDetail, ExecutionView};

/// Parses a status, in any case.
pub(crate) fn parse_status(s: &str) -> Result<ExecutionStatus, String> {
    ExecutionStatus::from_str(&s.trim().to_uppercase().replace('-', "_")).map_err(|_| {
        format!(
            "unknown status `{s}`; use PENDING, RUNNING, WAITING_APPROVAL, COMPLETED, FAILED or CANCELLED"
        )
    })
}

/// Who drives an unfinished execution, in words.
pub(crate) fn driver_text(e: &ExecutionView) -> String {
    if e.status.is_terminal() || e.status == ExecutionStatus::Pending {
        return "-".into();
    }
    match &e.driver {
        DriverView::Temporal => "temporal".into(),
        DriverView::Held { holder, .. } => holder.clone(),
        DriverView::None { since: Some(t) } => format!("no driver since {}", time(*t)),
        DriverView::None { since: None } => "no driver".into(),
    }
}

/// The columns of `executions list`, and one execution's row in them (`workflow` as the
/// caller names it: with its version when known).
pub(crate) const LIST_COLUMNS: [&str; 7] = [
    "id",
    "workflow",
    "status",
    "driver",
    ">cost USD",
    "created",
    "error",
];

pub(crate) fn list_row(e: &ExecutionView, workflow: String) -> Vec<String> {
    vec![
        e.id.to_string(),
        workflow,
        e.status.to_string(),
        driver_text(e),
        usd(e.cost_usd),
        time(e.created_at),
        e.error.as_deref().map(|x| short(x, 60)).unwrap_or_default(),
    ]
}

pub(crate) async fn list(status: Option<ExecutionStatus>, limit: u64) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    // Runs whose driver died give their budget reservations back before they are listed.
    wflo.engine().release_abandoned().await?;
    let db = wflo.db();
    let execs = match status {
        Some(s) => {
            let mut v = db.executions().list_by_status(s).await?;
            v.sort_by_key(|e| std::cmp::Reverse(e.created_at));
            v.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            v
        }
        None => db.executions().recent(limit).await?,
    };
    if execs.is_empty() {
        println!(
            "no executions{}",
            status
                .map(|s| format!(" with status {s}"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    let mut names: HashMap<Uuid, String> = HashMap::new();
    let mut t = Table::new(&LIST_COLUMNS);
    for e in &execs {
        if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(e.workflow_id) {
            let name = db
                .definitions()
                .get(e.workflow_id)
                .await
                .map(|d| format!("{} v{}", d.name, d.version))
                .unwrap_or_else(|_| "?".into());
            slot.insert(name);
        }
        t.row(list_row(
            &ExecutionView::of(e),
            names[&e.workflow_id].clone(),
        ));
    }
    print!("{}", t.render());
    Ok(0)
}

pub(crate) async fn show(id: ExecutionId) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let summary = wflo.execution_summary(id).await?;
    print_detail(&ExecutionDetail::of(&summary));
    Ok(0)
}

/// One execution, as `executions show` prints it: the same whether it was read from the
/// database or from a server's API.
pub(crate) fn print_detail(d: &ExecutionDetail) {
    let e = &d.execution;
    println!("execution {}", e.id);
    println!("workflow  {} v{}", e.workflow, d.workflow_version);
    println!("status    {}", e.status);
    println!("driver    {}", driver_text(e));
    println!("created   {}", time(e.created_at));
    println!("started   {}", maybe_time(e.started_at));
    println!("completed {}", maybe_time(e.completed_at));
    println!(
        "cost      {} USD{}",
        usd(e.cost_usd),
        e.budget_usd
            .map(|b| format!(
                " of budget {} USD ({})",
                usd(b),
                percent(e.cost_usd, Some(b))
            ))
            .unwrap_or_else(|| " (no budget)".into())
    );
    println!(
        "tokens    {} ({} prompt + {} completion)",
        e.tokens.total, e.tokens.prompt, e.tokens.completion
    );
    if e.inputs.as_object().is_some_and(|o| !o.is_empty()) {
        println!("inputs    {}", short(&e.inputs.to_string(), 200));
    }
    if let Some(c) = &e.correlation_id {
        println!("correlation {c}");
    }
    if let Some(t) = &e.trace_id {
        println!("trace     {t}");
    }
    if let Some(err) = &e.error {
        println!("error     {err}");
    }

    println!("\nsteps");
    if d.steps.is_empty() {
        println!("  none yet");
    } else {
        let mut t = Table::new(&[
            "step",
            "kind",
            "status",
            ">attempts",
            ">tokens",
            ">cost USD",
            "completed",
            "error",
        ]);
        for s in &d.steps {
            let output = match (s.kind.parse::<StepKind>(), &s.output) {
                (Ok(k), Some(v)) if s.status == StepStatus::Completed => {
                    StepOutput::read(k, v).ok()
                }
                _ => None,
            };
            t.row(vec![
                s.key.clone(),
                s.kind.clone(),
                s.status.to_string(),
                s.attempts.to_string(),
                super::run::tokens(s.tokens.prompt, s.tokens.completion),
                crate::format::step_cost(s.cost_usd, output.as_ref()),
                maybe_time(s.completed_at),
                s.error.as_deref().map(|x| short(x, 80)).unwrap_or_default(),
            ]);
        }
        print!("{}", indent(&t.render()));
    }

    println!("\nsnapshots");
    if d.snapshots.is_empty() {
        println!("  none");
    } else {
        let mut t = Table::new(&[">version", "after step", "created", "superseded"]);
        for s in &d.snapshots {
            t.row(vec![
                s.version.to_string(),
                s.step.clone().unwrap_or_else(|| "-".into()),
                time(s.created_at),
                maybe_time(s.superseded_at),
            ]);
        }
        print!("{}", indent(&t.render()));
    }

    println!("\napprovals");
    if d.approvals.is_empty() {
        println!("  none");
    } else {
        let mut t = Table::new(&[
            "id",
            "step",
            "status",
            "risk",
            "decided by",
            "reason",
            "message",
        ]);
        for a in &d.approvals {
            t.row(vec![
                a.id.to_string(),
                a.step.clone().unwrap_or_else(|| "-".into()),
                a.status.to_string(),
                a.risk.clone(),
                a.decided_by.clone().unwrap_or_else(|| "-".into()),
                a.reason
                    .as_deref()
                    .map(|r| short(r, 40))
                    .unwrap_or_default(),
                short(&a.message, 50),
            ]);
        }
        print!("{}", indent(&t.render()));
    }

    println!("\nrollbacks");
    if d.rollbacks.is_empty() {
        println!("  none");
    } else {
        let mut t = Table::new(&["id", ">to snapshot", "status", "by", "reason", "created"]);
        for r in &d.rollbacks {
            t.row(vec![
                r.id.to_string(),
                r.snapshot_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into()),
                r.status.clone(),
                r.initiated_by.clone(),
                short(&r.reason, 50),
                time(r.created_at),
            ]);
        }
        print!("{}", indent(&t.render()));
    }

    super::run::print_model_costs(&d.costs_by_model);
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_any_case() {
        assert_eq!(parse_status("failed").unwrap(), ExecutionStatus::Failed);
        assert_eq!(
            parse_status("waiting-approval").unwrap(),
            ExecutionStatus::WaitingApproval
        );
        let e = parse_status("done").unwrap_err();
        assert!(e.contains("COMPLETED"), "{e}");
    }
}
