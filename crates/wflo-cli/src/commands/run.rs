//! `wflo run`: run a workflow file (or resume an execution) with a live display, then print the
//! cost breakdown against the budget.

use crate::exit::{self, coded};
use crate::format::{Table, percent, short, usd};
use crate::progress::Progress;
use crate::{EngineKind, RunArgs};
use anyhow::Context;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use wflo_core::db::{ExecutionStatus, Executor};
use wflo_core::types::{ApprovalId, ExecutionId};
use wflo_core::{RunOptions, Wflo, WorkflowDef};
use wflo_server::CostView;

/// Parses `NAME=VALUE`: VALUE is JSON when it is a number, boolean, array or object, else text.
pub(crate) fn parse_input(s: &str) -> Result<(String, Value), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{s}` has no input name before `=`"));
    }
    let value = match serde_json::from_str::<Value>(value) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))) => v,
        _ => Value::String(value.to_string()),
    };
    Ok((name.to_string(), value))
}

/// Parses a positive amount of dollars, exactly.
pub(crate) fn parse_budget(s: &str) -> Result<Decimal, String> {
    let d = Decimal::from_str(s.trim().trim_start_matches('$'))
        .map_err(|_| format!("`{s}` is not an amount of dollars (e.g. 0.05)"))?;
    if d <= Decimal::ZERO {
        return Err(format!("the budget must be greater than zero, not {s}"));
    }
    Ok(d)
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = super::config()?;
    if args.engine == EngineKind::Temporal {
        return run_on_temporal(args, config).await;
    }
    // Read and validate the file before connecting anything: a bad file is a usage error.
    let def = match &args.file {
        Some(path) if args.resume.is_none() => Some(
            WorkflowDef::from_file(path)
                .with_context(|| format!("{} is not a valid workflow", path.display()))?,
        ),
        _ => None,
    };
    let wflo = match &args.record_cassette {
        Some(path) => {
            let recorder = super::recorder(&config, path)?;
            super::connect_with(config, move |b| b.llm(recorder)).await?
        }
        None => super::connect(config).await?,
    };
    let engine = wflo.engine();
    // Runs whose driver died give their budget reservations back.
    engine.release_abandoned().await?;
    let mut options = RunOptions {
        inputs: args.inputs.iter().cloned().collect(),
        budget_usd: args.budget,
        ..RunOptions::default()
    };
    let id = match (&def, args.resume) {
        (_, Some(id)) => id,
        (Some(def), None) => engine.create_execution(def, &options).await?,
        (None, None) => unreachable!("clap requires FILE unless --resume"),
    };
    // Read once: what it was started as (its budget, its workflow) and, for a resume, whether
    // it can go on (a new execution is PENDING).
    let exec = wflo.db().executions().get(id).await?;
    if exec.status.is_final() {
        return Err(coded(
            exit::USAGE,
            format!(
                "execution {id} is {}; only unfinished or failed executions can be resumed",
                exec.status
            ),
        ));
    }
    let (budget, name) = (exec.budget_usd, exec.workflow_name);
    let progress = Arc::new(Progress::new(budget));
    progress.println(&format!(
        "{} {name}: execution {id}{}",
        if args.resume.is_some() {
            "resuming"
        } else {
            "running"
        },
        budget
            .map(|b| format!(", budget {} USD", usd(b)))
            .unwrap_or_default()
    ));
    options.observer = Some(progress.clone());
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        r = engine.resume(id, options) => r,
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            // The run's future is dropped mid-step: what it held goes back now, not at expiry.
            let released = match engine.interrupt(id).await {
                Ok(0) => String::new(),
                Ok(n) => format!("; {n} budget reservation(s) released"),
                Err(e) => format!("; could not release its reservations now ({e}): they expire by themselves"),
            };
            eprintln!(
                "interrupted: execution {id} stopped where it was{released}; continue it with `wflo run --resume {id}`"
            );
            return Ok(130);
        }
    };
    progress.finish();
    // Refused before it started (another process drives the execution): nothing to summarise.
    if let Err(
        e @ wflo_core::RuntimeError::Db(
            wflo_core::db::Error::Leased { .. } | wflo_core::db::Error::Invalid { .. },
        ),
    ) = &outcome
    {
        return Err(coded(exit::FAILED, e.to_string()));
    }
    let elapsed = started.elapsed();
    print_summary(&wflo, id, elapsed).await?;
    match outcome {
        Ok(_) => Ok(0),
        Err(e) => {
            let code = exit::runtime_code(&e);
            let resumable = (code == exit::FAILED || code == exit::UNREACHABLE)
                && !matches!(
                    e,
                    wflo_core::RuntimeError::Rejected { .. }
                        | wflo_core::RuntimeError::StaleApproval { .. }
                );
            let hint = if resumable {
                format!(
                    "; after fixing the cause, continue it with `wflo run --resume {id}` (completed steps are not run again)"
                )
            } else {
                String::new()
            };
            Err(anyhow::Error::new(e).context(format!("execution {id} FAILED{hint}")))
        }
    }
}

/// `--engine temporal`: starts a `WfloWorkflow` (executed by `wflo worker`), follows it through
/// its queries, then prints the same summary from the database.
async fn run_on_temporal(args: RunArgs, config: wflo_core::Config) -> anyhow::Result<u8> {
    if let Some(id) = args.resume {
        return Err(coded(
            exit::USAGE,
            format!(
                "--resume is for the local engine; a Temporal run continues by itself once a \
                 worker is back (`wflo worker`); follow execution {id} with `wflo executions show {id}`"
            ),
        ));
    }
    if args.record_cassette.is_some() {
        return Err(coded(
            exit::USAGE,
            "--record-cassette records on the local engine; drop --engine temporal to record",
        ));
    }
    let Some(temporal) = config.temporal_config()? else {
        return Err(coded(
            exit::USAGE,
            "--engine temporal needs a Temporal server: set TEMPORAL_ADDRESS (and run `wflo worker` \
             with the same settings); `cargo xtask services up temporal` starts a dev server",
        ));
    };
    let path = args
        .file
        .as_ref()
        .ok_or_else(|| coded(exit::USAGE, "give the workflow file to run"))?;
    let def = WorkflowDef::from_file(path)
        .with_context(|| format!("{} is not a valid workflow", path.display()))?;
    let wflo = super::connect(config).await?;
    let client = wflo_core::temporal::TemporalClient::connect(temporal).await?;
    let id = ExecutionId::new();
    let started_run = client
        .start_wflo(id, &def, args.inputs.iter().cloned().collect(), args.budget)
        .await?;
    let workflow_id = started_run.workflow_id;
    let budget = args.budget.or(def.policies.budget_usd);
    println!(
        "running {} on temporal: execution {id}, workflow {workflow_id}{}",
        def.name,
        budget
            .map(|b| format!(", budget {} USD", usd(b)))
            .unwrap_or_default()
    );
    let started = std::time::Instant::now();
    let result = client.wflo_result(&workflow_id);
    tokio::pin!(result);
    let mut shown = 0usize;
    let mut waiting: Option<ApprovalId> = None;
    let mut unanswered_since: Option<std::time::Instant> = None;
    let mut hinted = false;
    let mut show = |status: &wflo_core::temporal::WfloStatus| {
        for step in status.completed_steps.iter().skip(shown) {
            println!(
                "  done  {step}  (spend so far {} USD)",
                usd(status.cost_usd)
            );
        }
        shown = shown.max(status.completed_steps.len());
        let now = status.pending_approval.as_ref().map(|p| p.approval_id);
        if now != waiting
            && let Some(p) = &status.pending_approval
        {
            println!(
                "  waiting for approval {} of step {}: {}\n        decide with `wflo approvals approve {}` or `wflo approvals reject {} --reason ...`",
                p.approval_id, p.step, p.message, p.approval_id, p.approval_id
            );
        }
        waiting = now;
    };
    let outcome = loop {
        tokio::select! {
            r = &mut result => break r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!(
                    "detached: workflow {workflow_id} keeps running on temporal; follow execution {id} with `wflo executions show {id}`"
                );
                return Ok(130);
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {
                match client.wflo_status(&workflow_id).await {
                    Ok(status) => {
                        unanswered_since = None;
                        show(&status);
                    }
                    // Queries are answered by workers: none answering means none is running.
                    Err(_) => {
                        let since = *unanswered_since.get_or_insert_with(std::time::Instant::now);
                        if !hinted && since.elapsed() > std::time::Duration::from_secs(5) {
                            hinted = true;
                            eprintln!(
                                "  no worker has answered for 5 s: start one with `wflo worker` (same TEMPORAL_* settings and database); the run waits for it"
                            );
                        }
                    }
                }
            }
        }
    };
    if let Ok(status) = client.wflo_status(&workflow_id).await {
        show(&status);
    }
    print_summary(&wflo, id, started.elapsed()).await?;
    match outcome {
        Ok(_) => Ok(0),
        Err(e) => Err(anyhow::Error::new(e).context(format!("execution {id} FAILED"))),
    }
}

/// The end of a run: status, steps with their cost, costs per model, total against the budget
/// the execution was started with.
pub(crate) async fn print_summary(
    wflo: &Wflo,
    id: ExecutionId,
    elapsed: std::time::Duration,
) -> anyhow::Result<()> {
    let summary = wflo.execution_summary(id).await?;
    let exec = &summary.execution;
    let (name, budget) = (&exec.workflow_name, exec.budget_usd);
    println!();
    println!(
        "{name}: execution {id} {} in {:.1}s",
        exec.status,
        elapsed.as_secs_f64()
    );
    let mut t = Table::new(&[
        "step",
        "kind",
        "status",
        ">attempts",
        ">tokens",
        ">cost USD",
    ]);
    for s in &summary.steps {
        let row = &s.step;
        t.row(vec![
            row.step_key.clone(),
            row.step_type.clone(),
            row.status.to_string(),
            row.attempt.to_string(),
            tokens(row.tokens.prompt, row.tokens.completion),
            crate::format::step_cost(row.cost_usd, s.output.as_ref()),
        ]);
    }
    if !t.is_empty() {
        println!("\n{}", t.render().trim_end());
    }
    // What the code steps printed: the point of the quickstart.
    for s in &summary.steps {
        if let Some(out) = s.stdout() {
            println!("\n{} printed:\n{}", s.step.step_key, out.trim_end());
        }
    }
    print_model_costs(
        &summary
            .costs_by_model
            .iter()
            .map(|(m, c)| (m.clone(), c.into()))
            .collect(),
    );
    println!(
        "\ntotal {} USD{}, {} tokens ({} prompt + {} completion)",
        usd(exec.cost_usd),
        match budget {
            Some(b) => format!(
                " of budget {} USD ({} used, {} USD left)",
                usd(b),
                percent(exec.cost_usd, Some(b)),
                usd((b - exec.cost_usd).max(Decimal::ZERO))
            ),
            None => " (no budget)".into(),
        },
        exec.tokens.total(),
        exec.tokens.prompt,
        exec.tokens.completion
    );
    println!("status {}", exec.status);
    if exec.status == ExecutionStatus::Failed
        && let Some(e) = &exec.error
    {
        println!("error {}", short(e, 300));
    }
    Ok(())
}

/// A step's or a run's tokens, `-` when none.
pub(crate) fn tokens(prompt: u64, completion: u64) -> String {
    if prompt + completion == 0 {
        "-".into()
    } else {
        format!("{prompt}+{completion}")
    }
}

/// The ledger's totals per model.
pub(crate) fn print_model_costs(by_model: &BTreeMap<String, CostView>) {
    if by_model.is_empty() {
        return;
    }
    let mut t = Table::new(&[
        "model",
        ">calls",
        ">prompt",
        ">completion",
        ">cached",
        ">cost USD",
    ]);
    for (model, s) in by_model {
        t.row(vec![
            model.clone(),
            s.calls.to_string(),
            s.prompt_tokens.to_string(),
            s.completion_tokens.to_string(),
            s.cached_prompt_tokens.to_string(),
            usd(s.cost_usd),
        ]);
    }
    println!("\n{}", t.render().trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_text_unless_they_are_json_values() {
        assert_eq!(
            parse_input("question=What is 2+2?").unwrap(),
            ("question".into(), json!("What is 2+2?"))
        );
        assert_eq!(parse_input("n=5").unwrap(), ("n".into(), json!(5)));
        assert_eq!(
            parse_input("tags=[\"a\"]").unwrap(),
            ("tags".into(), json!(["a"]))
        );
        assert_eq!(parse_input("s=\"x\"").unwrap().1, json!("\"x\""));
        assert_eq!(parse_input("a=b=c").unwrap().1, json!("b=c"));
        assert_eq!(parse_input("empty=").unwrap().1, json!(""));
        assert!(parse_input("novalue").is_err());
        assert!(parse_input("=x").is_err());
    }

    #[test]
    fn budgets_are_positive_exact_dollars() {
        assert_eq!(
            parse_budget("0.0000001").unwrap(),
            Decimal::from_str("0.0000001").unwrap()
        );
        assert_eq!(parse_budget("$0.05").unwrap(), Decimal::new(5, 2));
        assert!(parse_budget("0").is_err());
        assert!(parse_budget("-1").is_err());
        assert!(parse_budget("lots").is_err());
    }
}
