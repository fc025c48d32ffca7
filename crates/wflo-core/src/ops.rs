//! Operations on executions as a service performs them for someone: start a run in the
//! background, cancel, resume, take over runs whose driver died — each recorded with its actor.

use crate::{Error, Result, RunOptions, Wflo, WorkflowDef};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use wflo_db::{ExecutionEngine, Executor};
use wflo_types::ExecutionId;

/// Which workflow a run executes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkflowSource {
    /// A stored definition by name: its latest version, or the one given.
    Stored {
        /// The definition's name.
        name: String,
        /// Its version (latest when none).
        version: Option<i32>,
    },
    /// A definition written in YAML, stored (as a new version when it changed) and run.
    Yaml(String),
}

/// A run to start, on behalf of `actor`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StartRun {
    /// The workflow.
    pub source: WorkflowSource,
    /// Inputs (merged over the definition's defaults).
    pub inputs: Map<String, Value>,
    /// The execution's budget (overrides the definition's).
    pub budget_usd: Option<Decimal>,
    /// The caller's own tag for the run.
    pub correlation_id: Option<String>,
    /// Who starts it (recorded in the audit trail).
    pub actor: String,
}

impl StartRun {
    /// A run of `source` for `actor`, with no inputs or budget of its own.
    pub fn new(source: WorkflowSource, actor: impl Into<String>) -> StartRun {
        StartRun {
            source,
            inputs: Map::new(),
            budget_usd: None,
            correlation_id: None,
            actor: actor.into(),
        }
    }
}

/// A run accepted: it executes in the background.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Started {
    /// Its execution.
    pub execution_id: ExecutionId,
    /// The workflow's name.
    pub workflow: String,
    /// Where it runs: the in-process engine of this process, or Temporal.
    pub engine: ExecutionEngine,
}

impl Wflo {
    /// The definition `source` names, parsed and validated.
    pub async fn workflow_def(&self, source: &WorkflowSource) -> Result<WorkflowDef> {
        match source {
            WorkflowSource::Yaml(text) => Ok(WorkflowDef::from_yaml(text)?),
            WorkflowSource::Stored { name, version } => {
                let stored = match version {
                    Some(v) => self.db.definitions().get_version(name, *v).await?,
                    None => self.db.definitions().latest(name).await?,
                };
                let def = WorkflowDef::from_json(&stored.definition).map_err(|e| {
                    Error::Config(format!(
                        "the stored definition {name} v{} cannot be started by name ({e}); \
                         start it with its YAML",
                        stored.version
                    ))
                })?;
                def.validate()?;
                Ok(def)
            }
        }
    }

    /// Starts a run in the background and returns once it is recorded: on Temporal when
    /// `TEMPORAL_ADDRESS` is configured (executed by `wflo worker`), else on this process's
    /// in-process engine, which takes the execution's lease. Bad input (an unknown definition,
    /// an undeclared input, a budget that is not positive) is refused before anything is
    /// stored.
    pub async fn start_run(&self, req: StartRun) -> Result<Started> {
        let def = self.workflow_def(&req.source).await?;
        if let Some(unknown) = req.inputs.keys().find(|k| !def.inputs.contains_key(*k)) {
            let declared: Vec<&str> = def.inputs.keys().map(String::as_str).collect();
            return Err(Error::Config(if declared.is_empty() {
                format!(
                    "workflow `{}` takes no inputs; remove `{unknown}`",
                    def.name
                )
            } else {
                format!(
                    "workflow `{}` has no input `{unknown}`; its inputs are {}",
                    def.name,
                    declared.join(", ")
                )
            }));
        }
        if req.budget_usd.is_some_and(|b| b <= Decimal::ZERO) {
            return Err(Error::Config("the budget must be greater than zero".into()));
        }
        if let Some(temporal) = self.config.temporal_config()? {
            let client = wflo_temporal::TemporalClient::connect(temporal).await?;
            let id = ExecutionId::new();
            client
                .start_wflo(id, &def, req.inputs.clone(), req.budget_usd)
                .await?;
            tracing::info!(execution = %id, actor = %req.actor, "started on temporal");
            return Ok(Started {
                execution_id: id,
                workflow: def.name,
                engine: ExecutionEngine::Temporal,
            });
        }
        let options = RunOptions {
            inputs: req.inputs.clone(),
            budget_usd: req.budget_usd,
            correlation_id: req.correlation_id.clone(),
            ..RunOptions::default()
        };
        let id = self.engine.create_execution(&def, &options).await?;
        let exec = self.db.executions().get(id).await?;
        self.engine
            .record_audit(
                &exec,
                &req.actor,
                "execution.start",
                json!({"engine": "local"}),
            )
            .await?;
        self.drive_in_background(id);
        Ok(Started {
            execution_id: id,
            workflow: def.name,
            engine: ExecutionEngine::Local,
        })
    }

    fn drive_in_background(&self, id: ExecutionId) {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            match engine.resume(id, RunOptions::default()).await {
                Ok(outcome) => {
                    tracing::info!(execution = %id, status = %outcome.status, "run finished")
                }
                Err(e) => tracing::info!(execution = %id, error = %e, "run stopped"),
            }
        });
    }

    /// Cancels an unfinished execution on behalf of `actor`: on the in-process engine (its
    /// driver stops before its next step, wherever it runs), or through its workflow on
    /// Temporal. Returns the execution as it is now.
    pub async fn cancel(
        &self,
        id: impl Into<ExecutionId>,
        actor: &str,
        reason: &str,
    ) -> Result<wflo_db::Execution> {
        let id = id.into();
        let exec = self.db.executions().get(id).await?;
        if exec.engine != ExecutionEngine::Temporal {
            return Ok(self.engine.cancel(id, actor, reason).await?);
        }
        if exec.status.is_final() {
            return Err(Error::Runtime(crate::RuntimeError::InvalidState(format!(
                "execution {id} is {}; only unfinished executions can be cancelled",
                exec.status
            ))));
        }
        let Some(temporal) = self.config.temporal_config()? else {
            return Err(Error::Config(format!(
                "execution {id} runs on temporal; set TEMPORAL_ADDRESS so the cancellation \
                 reaches its workflow"
            )));
        };
        let client = wflo_temporal::TemporalClient::connect(temporal).await?;
        client
            .wflo_cancel_request(&wflo_temporal::wflo_workflow_id(id), reason)
            .await?;
        self.engine
            .record_audit(&exec, actor, "execution.cancel", json!({"reason": reason}))
            .await?;
        Ok(exec)
    }

    /// Continues a stopped in-process execution (FAILED, interrupted, rolled back) in the
    /// background, on behalf of `actor`. Refused when it is finished, runs on Temporal, or
    /// another driver holds its lease.
    pub async fn resume_in_background(
        &self,
        id: impl Into<ExecutionId>,
        actor: &str,
    ) -> Result<wflo_db::Execution> {
        let id = id.into();
        let exec = self.db.executions().get(id).await?;
        if exec.status.is_final() {
            return Err(Error::Runtime(crate::RuntimeError::InvalidState(format!(
                "execution {id} is {}; only unfinished or failed executions can resume",
                exec.status
            ))));
        }
        match exec.driver(chrono::Utc::now()) {
            wflo_db::Driver::Held { holder, until } => {
                return Err(Error::Db(wflo_db::Error::Leased {
                    id: id.to_string(),
                    holder,
                    until,
                }));
            }
            wflo_db::Driver::Temporal => {
                return Err(Error::Runtime(crate::RuntimeError::InvalidState(format!(
                    "execution {id} runs on temporal; it continues by itself once a worker runs"
                ))));
            }
            _ => {}
        }
        self.engine
            .record_audit(&exec, actor, "execution.resume", json!({}))
            .await?;
        self.drive_in_background(id);
        Ok(exec)
    }

    /// Takes over the in-process runs that a driver named `holder_prefix…` abandoned (its
    /// process died: the lease expired while still held), resuming each in the background.
    /// A run that another process takes first is left to it. Returns the runs taken over.
    pub async fn adopt_abandoned(&self, holder_prefix: &str) -> Result<Vec<ExecutionId>> {
        let now = chrono::Utc::now();
        let mut adopted = Vec::new();
        for exec in self.db.executions().without_driver(now).await? {
            let Some(holder) = &exec.lease_holder else {
                continue;
            };
            if !holder.starts_with(holder_prefix) || holder == self.engine.driver_name() {
                continue;
            }
            tracing::info!(execution = %exec.id, previous = %holder, "taking over an abandoned run");
            self.drive_in_background(exec.id);
            adopted.push(exec.id);
        }
        Ok(adopted)
    }
}
