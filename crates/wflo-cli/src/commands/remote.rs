//! The command line as a client of `wflo serve`: with WFLO_SERVER_URL and WFLO_TOKEN set,
//! `wflo approvals`, `wflo executions`, `wflo cost` and `wflo run` go through the server's API
//! (so an approver needs no database credentials); what is recorded names the token.

use crate::exit::{self, coded};
use crate::format::{Table, usd};
use crate::{GroupBy, RunArgs};
use anyhow::Context;
use std::time::Duration;
use wflo_core::types::{ApprovalId, ExecutionId, ExecutionStatus};
use wflo_server::{Client, ListExecutions, StartRequest};

/// The server client, when the configuration names a server.
pub(crate) fn client() -> anyhow::Result<Option<Client>> {
    let config = super::config()?;
    match config.server() {
        Some((url, token)) => Ok(Some(
            Client::new(url, token).map_err(|e| coded(exit::USAGE, e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// A server error as the command line reports it: the server's message, with the exit code
/// of its kind.
fn api(e: wflo_server::Error) -> anyhow::Error {
    match &e {
        wflo_server::Error::Unreachable { .. } => coded(exit::UNREACHABLE, e.to_string()),
        wflo_server::Error::Api { kind, message, .. } => {
            let code = match kind.as_str() {
                "budget_exceeded" => exit::BUDGET,
                "unavailable" => exit::UNREACHABLE,
                "conflict" | "rejected" | "internal" | "timeout" => exit::FAILED,
                _ => exit::USAGE,
            };
            coded(code, format!("the server refused: {message}"))
        }
        _ => coded(exit::USAGE, e.to_string()),
    }
}

pub(crate) async fn approvals_list(c: &Client) -> anyhow::Result<u8> {
    super::approvals::print_pending(&c.approvals().await.map_err(api)?);
    Ok(0)
}

pub(crate) async fn decide(
    c: &Client,
    id: ApprovalId,
    approve: bool,
    reason: Option<String>,
) -> anyhow::Result<u8> {
    let a = c.decide(id, approve, reason).await.map_err(api)?;
    println!(
        "{} approval {} (step {} of execution {}) as {} through {}",
        if approve { "approved" } else { "rejected" },
        a.id,
        a.step.as_deref().unwrap_or("-"),
        a.execution_id,
        a.decided_by.as_deref().unwrap_or("?"),
        c.base()
    );
    Ok(0)
}

pub(crate) async fn executions_list(
    c: &Client,
    status: Option<ExecutionStatus>,
    limit: u64,
) -> anyhow::Result<u8> {
    let page = c
        .executions(&ListExecutions {
            status,
            limit: Some(limit.clamp(1, 200)),
            ..Default::default()
        })
        .await
        .map_err(api)?;
    if page.items.is_empty() {
        println!("no executions");
        return Ok(0);
    }
    let mut t = Table::new(&super::executions::LIST_COLUMNS);
    for e in &page.items {
        t.row(super::executions::list_row(e, e.workflow.clone()));
    }
    print!("{}", t.render());
    Ok(0)
}

pub(crate) async fn executions_show(c: &Client, id: ExecutionId) -> anyhow::Result<u8> {
    let d = c.execution(id).await.map_err(api)?;
    super::executions::print_detail(&d);
    Ok(0)
}

pub(crate) async fn cost_report(
    c: &Client,
    by: GroupBy,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<u8> {
    let by = match by {
        GroupBy::Model => wflo_server::GroupBy::Model,
        GroupBy::Workflow => wflo_server::GroupBy::Workflow,
        GroupBy::Day => wflo_server::GroupBy::Day,
    };
    let report = c.costs(by, since).await.map_err(api)?;
    if report.rows.is_empty() {
        println!("no LLM calls recorded");
        return Ok(0);
    }
    let mut t = Table::new(&["key", ">calls", ">prompt", ">completion", ">cost USD"]);
    for r in report.rows.iter() {
        t.row(vec![
            r.key.clone(),
            r.totals.calls.to_string(),
            r.totals.prompt_tokens.to_string(),
            r.totals.completion_tokens.to_string(),
            usd(r.totals.cost_usd),
        ]);
    }
    t.row(vec![
        "total".into(),
        report.total.calls.to_string(),
        report.total.prompt_tokens.to_string(),
        report.total.completion_tokens.to_string(),
        usd(report.total.cost_usd),
    ]);
    print!("{}", t.render());
    Ok(0)
}

/// Starts the file's workflow on the server and follows it to its end.
pub(crate) async fn run(c: &Client, args: RunArgs) -> anyhow::Result<u8> {
    if args.resume.is_some() || args.record_cassette.is_some() {
        return Err(coded(
            exit::USAGE,
            "--resume and --record-cassette are not available through a server; unset \
             WFLO_SERVER_URL to run against the database",
        ));
    }
    let path = args
        .file
        .as_ref()
        .ok_or_else(|| coded(exit::USAGE, "give the workflow file to run"))?;
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let started = c
        .start(&StartRequest {
            workflow: None,
            version: None,
            yaml: Some(yaml),
            inputs: args.inputs.into_iter().collect(),
            budget_usd: args.budget,
            correlation_id: None,
        })
        .await
        .map_err(api)?;
    println!(
        "started {} on {}: execution {} ({})",
        started.workflow,
        c.base(),
        started.id,
        started.engine
    );
    let mut shown = 0usize;
    let mut waiting_said = false;
    loop {
        let d = c.execution(started.id).await.map_err(api)?;
        let done: Vec<_> = d
            .steps
            .iter()
            .filter(|s| s.status == wflo_core::types::StepStatus::Completed)
            .collect();
        for s in done.iter().skip(shown) {
            println!(
                "  done  {}  (spend so far {} USD)",
                s.key,
                usd(d.execution.cost_usd)
            );
        }
        shown = shown.max(done.len());
        let status = d.execution.status;
        if status == ExecutionStatus::WaitingApproval && !waiting_said {
            if let Some(a) = d
                .approvals
                .iter()
                .find(|a| a.status == wflo_core::types::ApprovalStatus::Pending)
            {
                println!(
                    "  waiting for approval {}: {} (decide with `wflo approvals approve {}`)",
                    a.id, a.message, a.id
                );
            }
            waiting_said = true;
        }
        if status.is_terminal() {
            println!();
            super::executions::print_detail(&d);
            return Ok(if status == ExecutionStatus::Completed {
                0
            } else {
                exit::FAILED
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
