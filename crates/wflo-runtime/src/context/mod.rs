//! The step logic both engines share: memoized steps (LLM with budget reservation, code in the
//! sandbox, approvals, checkpoints, tools), each persisted with its event in one transaction.
//!
//! [`Ctx`] holds a run's state; `memo` makes a step durable (run once, its output stored with
//! its event); each step kind lives in its own module under `steps`.

mod memo;
mod steps;

pub(crate) use steps::approval::apply_timeout_policy;
pub use steps::approval::{ApprovalCall, action_fingerprint};
pub use steps::code::CodeCall;
pub use steps::llm::{LlmCall, extract_code};

use crate::definition::{StepDef, StepKind, WorkflowDef};
use crate::engine::Engine;
use crate::tools::Observer;
use crate::{Error, Result, events, template};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steps::approval::approval_call_from;
use wflo_cost::Scope;
use wflo_db::{ExecutionStatus, Executor, NewStep, Outcome, StepStatus};
use wflo_types::ExecutionId;
use wflo_types::RunLabels;
use wflo_types::{CheckpointOutput, StepOutput};

pub(crate) struct RunState {
    pub(crate) inputs: Value,
    pub(crate) outputs: Map<String, Value>,
    pub(crate) vars: Map<String, Value>,
}

/// The handle a workflow body uses to run durable steps. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) engine: Engine,
    pub(crate) execution: ExecutionId,
    /// The run's workflow name, trace and correlation ids, carried by every event it writes.
    pub(crate) labels: Arc<RunLabels>,
    pub(crate) budget: Option<Decimal>,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) state: Arc<Mutex<RunState>>,
    /// The execution's step rows by key, loaded once when the run starts and updated by each
    /// change this run makes: memoization needs no query per step.
    pub(crate) steps: Arc<Mutex<HashMap<String, wflo_db::Step>>>,
    /// The driver's lease when the in-process engine drives the run (checked before each step;
    /// an engine that keeps the control flow itself, Temporal, holds none).
    pub(crate) lease: Arc<std::sync::OnceLock<Arc<crate::lease::Held>>>,
    /// Events a step's body produced, by step key, written with the step's COMPLETED or
    /// FAILED update (one transaction: the result and its event commit together).
    pub(crate) pending_events: Arc<Mutex<HashMap<String, Vec<wflo_db::NewOutboxEvent>>>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("execution", &self.execution)
            .field("workflow", &self.labels.workflow)
            .finish()
    }
}

impl Ctx {
    /// The execution's id.
    pub fn execution_id(&self) -> ExecutionId {
        self.execution
    }

    /// The run's inputs.
    pub fn inputs(&self) -> Value {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .inputs
            .clone()
    }

    /// A variable (restored by checkpoints and rollbacks).
    pub fn var(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .vars
            .get(name)
            .cloned()
    }

    /// Sets a variable; the next checkpoint saves it.
    pub fn set_var(&self, name: &str, value: Value) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .vars
            .insert(name.to_string(), value);
    }

    pub(crate) fn outputs(&self) -> Map<String, Value> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .outputs
            .clone()
    }

    fn template_context(&self) -> Value {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let steps: Map<String, Value> = st
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), json!({ "output": v })))
            .collect();
        json!({"inputs": st.inputs, "steps": steps, "vars": st.vars})
    }

    pub(crate) async fn set_execution_status(
        &self,
        to: ExecutionStatus,
        outcome: Outcome,
    ) -> Result<wflo_db::Execution> {
        let db = &self.engine.inner.db;
        let tx = db.begin().await?;
        let before = tx.executions().get(self.execution).await?.status;
        let error = outcome.error.clone();
        let exec = tx
            .executions()
            .transition(self.execution, to, outcome)
            .await?;
        tx.outbox()
            .enqueue(events::outbox(
                events::workflow_status(
                    to.as_str(),
                    Some(before.as_str()),
                    error,
                    Some(exec.cost_usd),
                ),
                self.execution,
                &self.labels,
            ))
            .await?;
        tx.commit().await?;
        Ok(exec)
    }

    /// Moves a step to `to` with its `step.status` event, atomically (one statement on
    /// PostgreSQL), and remembers the row.
    async fn set_step_status(
        &self,
        step: &wflo_db::Step,
        to: StepStatus,
        outputs: Option<Value>,
        error: Option<String>,
    ) -> Result<wflo_db::Step> {
        let event = events::outbox(
            events::step_status(&step.step_key, &step.step_type, to.as_str(), error.clone()),
            self.execution,
            &self.labels,
        );
        let mut events = vec![event];
        if matches!(to, StepStatus::Completed | StepStatus::Failed) {
            events.extend(self.take_pending(&step.step_key));
        }
        let s = self
            .engine
            .inner
            .db
            .steps()
            .transition_with_events(step.id, to, outputs, error, events)
            .await?;
        self.remember(&s);
        Ok(s)
    }

    /// Records a new step in RUNNING with its `step.status` event, atomically. `None` when a
    /// row with this key exists already (recorded after this run loaded its steps).
    async fn start_step(
        &self,
        key: &str,
        kind: &str,
        inputs: &Value,
    ) -> Result<Option<wflo_db::Step>> {
        let event = events::outbox(
            events::step_status(key, kind, StepStatus::Running.as_str(), None),
            self.execution,
            &self.labels,
        );
        match self
            .engine
            .inner
            .db
            .steps()
            .start_with_events(
                NewStep {
                    execution_id: self.execution,
                    step_key: key.to_string(),
                    step_type: kind.to_string(),
                    inputs: Some(inputs.clone()),
                },
                vec![event],
            )
            .await
        {
            Ok(s) => {
                self.remember(&s);
                Ok(Some(s))
            }
            Err(wflo_db::Error::AlreadyExists {
                entity: "step execution",
                ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The step rows of this execution, as this run last saw them.
    fn remember(&self, step: &wflo_db::Step) {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(step.step_key.clone(), step.clone());
    }

    /// The recorded step with this key: from the rows loaded when the run started (and kept up
    /// to date by it), without a query.
    fn known_step(&self, key: &str) -> Option<wflo_db::Step> {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

impl Ctx {
    /// Queues an event of step `key` to be written with its next COMPLETED or FAILED update.
    fn emit_with_step(&self, key: &str, event: wflo_db::NewOutboxEvent) {
        self.pending_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .push(event);
    }

    fn take_pending(&self, key: &str) -> Vec<wflo_db::NewOutboxEvent> {
        self.pending_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key)
            .unwrap_or_default()
    }

    /// Refuses to go on when this run's driver lost its lease (another process drives now).
    fn check_lease(&self) -> Result<()> {
        match self.lease.get() {
            Some(held) => held.check(),
            None => Ok(()),
        }
    }

    /// Runs one step of a definition: renders its templates, then dispatches on its kind.
    pub(crate) async fn run_definition_step(
        &self,
        def: &WorkflowDef,
        step: &StepDef,
    ) -> Result<Value> {
        let p = self.render_step_params(step)?;
        let s = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_string);
        let num = |name: &str| {
            p.get(name)
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        };
        match step.kind {
            StepKind::Llm => {
                let call = LlmCall {
                    model: s("model").unwrap_or_default(),
                    system: s("system"),
                    prompt: s("prompt").unwrap_or_default(),
                    max_tokens: num("max_tokens").map(|n| n as u32),
                    temperature: num("temperature"),
                };
                self.llm_with(&step.id, call, step.retry, step.timeout)
                    .await
            }
            StepKind::Code => {
                let call = CodeCall {
                    language: s("language").unwrap_or_else(|| "python".into()),
                    code: s("code").unwrap_or_default(),
                    timeout: num("sandbox_timeout_secs")
                        .map(Duration::from_secs_f64)
                        .or(step.timeout),
                    network: p.get("network").and_then(Value::as_bool).unwrap_or(false),
                };
                self.code_with(&step.id, call, step.retry, None).await
            }
            StepKind::Checkpoint => {
                let v = self.checkpoint(&step.id).await?;
                Ok(StepOutput::Checkpoint(CheckpointOutput {
                    snapshot_version: v,
                    snapshot_id: None,
                })
                .to_value())
            }
            StepKind::Tool => {
                let name = s("tool").unwrap_or_default();
                let input = p.get("input").cloned().unwrap_or(Value::Null);
                self.tool_with(&step.id, &name, input, step.retry, step.timeout)
                    .await
            }
            StepKind::Approval => {
                let call = approval_call_from(def, step, &p)?;
                self.approval(&step.id, call).await
            }
            other => Err(Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: format!("this build cannot run a `{other}` step; upgrade wflo"),
            }),
        }
    }

    /// The approval request an approval step of `def` makes, its templates rendered on this
    /// run's state.
    pub(crate) fn approval_call(&self, def: &WorkflowDef, step: &StepDef) -> Result<ApprovalCall> {
        approval_call_from(def, step, &self.render_step_params(step)?)
    }

    /// A step's parameters with their templates rendered on this run's state.
    fn render_step_params(&self, step: &StepDef) -> Result<Map<String, Value>> {
        template::render_params(&step.params, &self.template_context()).map_err(|message| {
            Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: format!("template failed: {message}"),
            }
        })
    }

    /// Puts the outputs of the completed steps this context knows into its state (a context
    /// that runs one step of an execution, not the whole run, needs them for its templates).
    pub(crate) fn load_completed_outputs(&self) {
        let steps = self
            .steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, step) in steps.iter() {
            if step.status == StepStatus::Completed {
                st.outputs
                    .insert(key.clone(), step.outputs.clone().unwrap_or(Value::Null));
            }
        }
    }

    /// The step `key` if it has completed.
    pub(crate) fn known_completed(&self, key: &str) -> Option<wflo_db::Step> {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|s| s.status == StepStatus::Completed)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_first_code_block() {
        assert_eq!(
            extract_code("Here:\n```python\nprint(1)\n```\nDone"),
            "print(1)\n"
        );
        assert_eq!(extract_code("print(2)"), "print(2)");
    }

    #[test]
    fn fingerprints_change_with_the_action_only() {
        let a = action_fingerprint("deploy", &json!({"b": 1, "a": [1, 2]}));
        let b = action_fingerprint("deploy", &json!({"a": [1, 2], "b": 1}));
        let c = action_fingerprint("deploy", &json!({"a": [1, 2], "b": 2}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("sha256:"));
    }

    #[test]
    fn a_fingerprint_stored_before_stays_the_same() {
        // Computed outside Rust: sha256 of the sorted, compact JSON of step and action.
        assert_eq!(
            action_fingerprint(
                "deploy",
                &json!({"b": 1, "a": [1, 2], "msg": "h\u{e9}llo \"x\"\n"})
            ),
            "sha256:832802c33feb486e10f2d1e7239f8a0b99f861580234a170301b3e104360ba99"
        );
    }
}
