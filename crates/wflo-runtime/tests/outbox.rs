//! Property, hermetic: after many random runs the outbox holds exactly one event per recorded
//! change. Each run is a random chain of steps — tools that answer, fail a few times before
//! answering, or fail for good; LLM calls; checkpoints; auto-approved gates — with random retry
//! policies, on one engine over SQLite in memory. For every run, the events are checked
//! against the rows: two `step.status` per attempt of each step, one `cost.recorded` per
//! ledger row with its amount, one `approval.requested` per request, one `approval.decided` and
//! one audit event per decision, and `workflow.status` events that chain (each names the previous one's status
//! as its own previous) from PENDING to the status the execution is left in. The seed of a
//! failing case is printed.

mod common;

use common::{FakeLlm, engine, events};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wflo_db::{ApprovalStatus, Executor};
use wflo_runtime::{Engine, FnTool, RunOptions, ToolError, WorkflowDef};
use wflo_types::EventPayload;
use wflo_types::ExecutionId;

/// How many random runs.
const RUNS: u64 = 60;

/// One step of a random chain.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A tool that answers.
    Tool,
    /// A tool that fails `failures` times, then answers; the step allows `attempts`.
    Flaky { failures: u32, attempts: u32 },
    /// A tool that fails for good (a permanent error).
    Broken,
    /// An LLM call.
    Llm { attempts: u32 },
    /// A checkpoint.
    Checkpoint,
    /// A low-risk gate the definition approves by rule.
    Gate,
}

fn random_chain(rng: &mut StdRng) -> Vec<Step> {
    (0..rng.random_range(1..=6))
        .map(|_| match rng.random_range(0..8) {
            0 | 1 => Step::Tool,
            2 => Step::Flaky {
                failures: rng.random_range(1..=3),
                attempts: rng.random_range(1..=3),
            },
            3 => Step::Broken,
            4 | 5 => Step::Llm {
                attempts: rng.random_range(1..=2),
            },
            6 => Step::Checkpoint,
            _ => Step::Gate,
        })
        .collect()
}

fn yaml(name: &str, chain: &[Step]) -> String {
    let mut y = format!(
        "name: {name}\npolicies:\n  budget_usd: \"1\"\n  approval: {{auto_approve_max_risk: low}}\nsteps:\n"
    );
    for (i, step) in chain.iter().enumerate() {
        y.push_str(&format!("  - id: s{i}\n"));
        if i > 0 {
            y.push_str(&format!("    depends_on: [s{}]\n", i - 1));
        }
        y.push_str(&match *step {
            Step::Tool => "    kind: tool\n    tool: ok\n".to_string(),
            Step::Flaky { failures, attempts } => format!(
                "    kind: tool\n    tool: flaky\n    input: {{fail: {failures}, key: \"{name}-s{i}\"}}\n    retry: {{max_attempts: {attempts}, backoff_ms: 1}}\n"
            ),
            Step::Broken => "    kind: tool\n    tool: broken\n".to_string(),
            Step::Llm { attempts } => format!(
                "    kind: llm\n    model: gpt-4o-mini\n    prompt: \"step {i}\"\n    max_tokens: 20\n    retry: {{max_attempts: {attempts}, backoff_ms: 1}}\n"
            ),
            Step::Checkpoint => "    kind: checkpoint\n".to_string(),
            Step::Gate => {
                "    kind: approval\n    message: \"go on?\"\n    risk: low\n    action: \"next\"\n"
                    .to_string()
            }
        });
    }
    y
}

/// The engine every run shares, with its three tools.
async fn shared_engine(llm: &Arc<FakeLlm>) -> Engine {
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let flaky = FnTool::new(move |input| {
        let seen = seen.clone();
        async move {
            let key = input["key"].as_str().unwrap_or_default().to_string();
            let fail = input["fail"].as_u64().unwrap_or(0);
            let calls = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(key).or_default();
                *n += 1;
                *n
            };
            if calls <= fail {
                Err(ToolError::new(format!("busy (call {calls})")))
            } else {
                Ok(json!({"after": calls}))
            }
        }
    });
    engine(Some(llm), |b| {
        b.tool("ok", FnTool::new(|_| async { Ok(json!("done")) }))
            .tool("flaky", flaky)
            .tool(
                "broken",
                FnTool::new(|_| async { Err(ToolError::permanent("the account is closed")) }),
            )
    })
    .await
}

/// Checks one run's events against its rows; returns what was wrong, if anything.
async fn check(engine: &Engine, id: ExecutionId) -> Result<(), String> {
    let db = engine.db();
    let exec = db.executions().get(id).await.map_err(|e| e.to_string())?;
    let steps = db.steps().list(id).await.map_err(|e| e.to_string())?;
    let approvals = db.approvals().list(id).await.map_err(|e| e.to_string())?;
    let ledger = db
        .costs()
        .list_for_execution(id)
        .await
        .map_err(|e| e.to_string())?;
    let events = events(db, id).await;

    let mut step_events: HashMap<String, i32> = HashMap::new();
    let mut charged: Vec<Decimal> = Vec::new();
    let (mut requested, mut decided, mut audited) = (0usize, 0usize, 0usize);
    let mut chain: Vec<(Option<String>, String)> = Vec::new();
    for e in &events {
        match e {
            EventPayload::StepStatus(p) => *step_events.entry(p.step_id.clone()).or_default() += 1,
            EventPayload::CostRecorded(p) => charged.push(p.cost_usd),
            EventPayload::ApprovalRequested(_) => requested += 1,
            EventPayload::ApprovalDecided(_) => decided += 1,
            EventPayload::Audit(p) if p.action.starts_with("approval.") => audited += 1,
            EventPayload::WorkflowStatus(p) => {
                chain.push((p.previous_status.clone(), p.status.clone()))
            }
            other => return Err(format!("an event no change of these runs makes: {other:?}")),
        }
    }
    for s in &steps {
        let got = step_events.remove(&s.step_key).unwrap_or(0);
        if got != 2 * s.attempt {
            return Err(format!(
                "step {} made {} attempt(s) but has {got} step.status event(s)",
                s.step_key, s.attempt
            ));
        }
    }
    if !step_events.is_empty() {
        return Err(format!("step events without a step row: {step_events:?}"));
    }
    let mut rows: Vec<Decimal> = ledger.iter().map(|l| l.cost_usd).collect();
    rows.sort();
    charged.sort();
    if rows != charged {
        return Err(format!("ledger rows {rows:?} but cost events {charged:?}"));
    }
    let decisions = approvals
        .iter()
        .filter(|a| a.status != ApprovalStatus::Pending)
        .count();
    if (requested, decided, audited) != (approvals.len(), decisions, decisions) {
        return Err(format!(
            "{} request(s) and {decisions} decision(s) but {requested} requested, {decided} \
             decided and {audited} audit event(s)",
            approvals.len()
        ));
    }
    let mut previous = "PENDING".to_string();
    for (from, to) in &chain {
        if from.as_deref() != Some(previous.as_str()) {
            return Err(format!("workflow events do not chain: {chain:?}"));
        }
        previous = to.clone();
    }
    if previous != exec.status.as_str() {
        return Err(format!(
            "the execution is {} but its last workflow event says {previous}",
            exec.status
        ));
    }
    Ok(())
}

#[tokio::test]
async fn every_recorded_change_has_exactly_one_event() {
    let llm = FakeLlm::answering("fine");
    let engine = shared_engine(&llm).await;
    let mut failed_runs = 0;
    for seed in 0..RUNS {
        let mut rng = StdRng::seed_from_u64(seed);
        let chain = random_chain(&mut rng);
        let name = format!("random-{seed}");
        let def = WorkflowDef::from_yaml(&yaml(&name, &chain))
            .unwrap_or_else(|e| panic!("seed {seed}: {chain:?}: {e}"));
        let id = ExecutionId::new();
        let result = engine
            .run(
                &def,
                RunOptions {
                    execution_id: Some(id),
                    ..Default::default()
                },
            )
            .await;
        failed_runs += usize::from(result.is_err());
        if let Err(problem) = check(&engine, id).await {
            panic!("seed {seed}, chain {chain:?}, run {result:?}: {problem}");
        }
    }
    // The random chains cover both ends.
    assert!(
        failed_runs > 0 && failed_runs < RUNS as usize,
        "{failed_runs} of {RUNS} runs failed"
    );
}
