//! The in-process engine: runs a stored definition or a Rust closure, step by step, with
//! durable memoization.
//!
//! Approval decisions live in `decide`, rollbacks in `rollback`.

mod decide;
mod rollback;

pub use rollback::RollbackOutcome;

use crate::context::{Ctx, RunState};
use crate::definition::WorkflowDef;
use crate::events;
use crate::tools::{Observer, Tool};
use crate::{Error, Result};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::Instrument;
use uuid::Uuid;
use wflo_cache::LlmCache;
use wflo_cost::{CostTracker, Period, Scope};
use wflo_db::{
    Db, ExecutionEngine, ExecutionStatus, Executor, NewDefinition, NewExecution, Outcome,
};
use wflo_llm::LlmProvider;
use wflo_sandbox::{SandboxConfig, SandboxRuntime};
use wflo_types::ExecutionId;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub(crate) approval_poll: Duration,
    pub(crate) default_max_tokens: u32,
    pub(crate) cache_namespace: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) driver_name: String,
}

impl EngineConfig {
    /// Defaults: approvals polled every 250 ms, LLM steps capped at 1024 output tokens unless
    /// they say otherwise, cache namespace `default`, a driver's lease of 30 s (renewed every
    /// 10 s while the run is driven), the driver named after the host and process.
    pub fn builder() -> EngineConfigBuilder {
        EngineConfigBuilder(EngineConfig {
            approval_poll: Duration::from_millis(250),
            default_max_tokens: 1024,
            cache_namespace: "default".into(),
            lease_ttl: Duration::from_secs(30),
            driver_name: crate::lease::default_holder(),
        })
    }

    /// The name this engine's runs hold their executions' leases under.
    pub fn driver_name(&self) -> &str {
        &self.driver_name
    }
}

/// Builder of [`EngineConfig`].
#[derive(Debug, Clone)]
pub struct EngineConfigBuilder(EngineConfig);

impl EngineConfigBuilder {
    /// How often a waiting approval is checked.
    pub fn approval_poll(mut self, d: Duration) -> Self {
        self.0.approval_poll = d;
        self
    }
    /// Output cap of LLM steps that give no `max_tokens` (it bounds the budget reservation).
    pub fn default_max_tokens(mut self, n: u32) -> Self {
        self.0.default_max_tokens = n;
        self
    }
    /// Namespace (tenant) of the LLM response cache.
    pub fn cache_namespace(mut self, ns: impl Into<String>) -> Self {
        self.0.cache_namespace = ns.into();
        self
    }
    /// How long a driver's lease on an execution lasts unless renewed (it is renewed every
    /// third of it while the run is driven). A run whose process died is recognised, and its
    /// budget reservations released, once this much time has passed.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.0.lease_ttl = ttl;
        self
    }
    /// The name under which this engine holds leases (shown as the driver of its runs).
    pub fn driver_name(mut self, name: impl Into<String>) -> Self {
        self.0.driver_name = name.into();
        self
    }
    /// Validates.
    pub fn build(self) -> Result<EngineConfig> {
        if self.0.approval_poll.is_zero() || self.0.default_max_tokens == 0 {
            return Err(Error::NotConfigured(
                "approval_poll and default_max_tokens must be greater than zero".into(),
            ));
        }
        if self.0.lease_ttl < Duration::from_secs(1) {
            return Err(Error::NotConfigured(
                "a driver's lease must last at least one second".into(),
            ));
        }
        if self.0.driver_name.trim().is_empty() {
            return Err(Error::NotConfigured(
                "the driver name must not be empty".into(),
            ));
        }
        if self.0.cache_namespace.is_empty() {
            return Err(Error::NotConfigured(
                "the cache namespace must not be empty".into(),
            ));
        }
        Ok(self.0)
    }
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) costs: CostTracker,
    pub(crate) llm: Option<Arc<dyn LlmProvider>>,
    pub(crate) sandbox_config: Option<SandboxConfig>,
    pub(crate) sandbox: OnceCell<Arc<SandboxRuntime>>,
    pub(crate) cache: Option<LlmCache>,
    pub(crate) tools: HashMap<String, Arc<dyn Tool>>,
    pub(crate) config: EngineConfig,
    /// Parsed definitions by stored id (a stored definition never changes), for engines that
    /// run an execution one step per call.
    pub(crate) definitions: std::sync::Mutex<HashMap<Uuid, Arc<WorkflowDef>>>,
    /// Leases this engine holds, by execution (for [`Engine::interrupt`]).
    pub(crate) leases: std::sync::Mutex<HashMap<ExecutionId, Arc<crate::lease::Held>>>,
}

/// The in-process engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("db", &self.inner.db)
            .field(
                "llm",
                &self.inner.llm.as_ref().map(|p| p.name().to_string()),
            )
            .field("tools", &self.inner.tools.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builder of [`Engine`].
pub struct EngineBuilder {
    db: Db,
    costs: Option<CostTracker>,
    llm: Option<Arc<dyn LlmProvider>>,
    sandbox: Option<SandboxConfig>,
    cache: Option<LlmCache>,
    tools: HashMap<String, Arc<dyn Tool>>,
    config: Option<EngineConfig>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder").finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The cost tracker (prices, budgets). Default: the embedded price catalogue.
    pub fn costs(mut self, costs: CostTracker) -> Self {
        self.costs = Some(costs);
        self
    }
    /// The LLM provider `llm` steps call.
    pub fn llm(mut self, provider: Arc<dyn LlmProvider>) -> Self {
        self.llm = Some(provider);
        self
    }
    /// The sandbox `code` steps run in (connected on first use).
    pub fn sandbox(mut self, config: SandboxConfig) -> Self {
        self.sandbox = Some(config);
        self
    }
    /// The LLM response cache.
    pub fn cache(mut self, cache: LlmCache) -> Self {
        self.cache = Some(cache);
        self
    }
    /// Registers a tool under `name`.
    pub fn tool(mut self, name: impl Into<String>, tool: impl Tool) -> Self {
        self.tools.insert(name.into(), Arc::new(tool));
        self
    }
    /// Engine settings.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = Some(config);
        self
    }
    /// The engine.
    pub fn build(self) -> Result<Engine> {
        let config = match self.config {
            Some(c) => c,
            None => EngineConfig::builder().build()?,
        };
        let costs = self.costs.unwrap_or_else(|| {
            CostTracker::new(
                self.db.clone(),
                wflo_cost::PriceCatalog::embedded().clone(),
                wflo_cost::CostConfig::default(),
            )
        });
        Ok(Engine {
            inner: Arc::new(Inner {
                db: self.db,
                costs,
                llm: self.llm,
                sandbox_config: self.sandbox,
                sandbox: OnceCell::new(),
                cache: self.cache,
                tools: self.tools,
                config,
                definitions: Default::default(),
                leases: Default::default(),
            }),
        })
    }
}

/// How to run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Inputs (merged over the definition's defaults).
    pub inputs: serde_json::Map<String, Value>,
    /// The execution's budget; overrides the definition's `policies.budget_usd`.
    pub budget_usd: Option<Decimal>,
    /// Further budget scopes the run's calls count against (tenant, agent).
    pub scopes: Vec<Scope>,
    /// Follows the run.
    pub observer: Option<Arc<dyn Observer>>,
    /// A chosen execution id (idempotent start).
    pub execution_id: Option<ExecutionId>,
    /// The distributed trace the run belongs to (W3C trace id, 32 hex digits), stored with the
    /// execution and carried by its events.
    pub trace_id: Option<String>,
    /// The embedder's own tag for the run (a request id, a ticket), stored with the execution
    /// and carried by its events.
    pub correlation_id: Option<String>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("inputs", &self.inputs)
            .field("budget_usd", &self.budget_usd)
            .field("scopes", &self.scopes)
            .field("execution_id", &self.execution_id)
            .field("trace_id", &self.trace_id)
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its final status.
    pub status: ExecutionStatus,
    /// Outputs (each step's output by id, for definitions).
    pub outputs: Value,
    /// Money spent, exact.
    pub cost_usd: Decimal,
    /// The budget it ran under.
    pub budget_usd: Option<Decimal>,
}

impl Engine {
    /// Starts building an engine on `db`.
    pub fn builder(db: Db) -> EngineBuilder {
        EngineBuilder {
            db,
            costs: None,
            llm: None,
            sandbox: None,
            cache: None,
            tools: HashMap::new(),
            config: None,
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The name this engine's runs hold their executions' leases under.
    pub fn driver_name(&self) -> &str {
        &self.inner.config.driver_name
    }

    /// The cost tracker.
    pub fn costs(&self) -> &CostTracker {
        &self.inner.costs
    }

    /// The sandbox, connected on first use.
    pub(crate) async fn sandbox(&self) -> Result<Arc<SandboxRuntime>> {
        let config = self.inner.sandbox_config.clone().ok_or_else(|| {
            Error::NotConfigured(
                "code steps need the sandbox: configure it (wflo-core does when Docker is reachable)"
                    .into(),
            )
        })?;
        self.inner
            .sandbox
            .get_or_try_init(|| async move { Ok(Arc::new(SandboxRuntime::new(config).await?)) })
            .await
            .cloned()
    }

    /// Stops the sandbox (removing its warm containers) if one was started. Call it before the
    /// process exits; a later start sweeps what a crash left behind.
    pub async fn shutdown(&self) {
        if let Some(sandbox) = self.inner.sandbox.get() {
            sandbox.shutdown().await;
        }
    }

    /// Stores `def` (a new version when its content changed) and returns the stored id.
    pub async fn store_definition(&self, def: &WorkflowDef) -> Result<wflo_db::Definition> {
        def.validate()?;
        self.store_document(&def.name, def.description.clone(), def.to_json())
            .await
    }

    /// Stores `doc` under `name` unless the latest version already holds exactly it.
    async fn store_document(
        &self,
        name: &str,
        description: Option<String>,
        doc: Value,
    ) -> Result<wflo_db::Definition> {
        match self.inner.db.definitions().latest(name).await {
            Ok(latest) if latest.definition == doc => return Ok(latest),
            Ok(_) | Err(wflo_db::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self
            .inner
            .db
            .definitions()
            .create(NewDefinition {
                name: name.to_string(),
                version: None,
                description,
                definition: doc,
            })
            .await?)
    }

    /// A PENDING execution of a stored definition, with its execution budget when one is given.
    async fn insert_execution(
        &self,
        stored: &wflo_db::Definition,
        options: &RunOptions,
        inputs: Value,
        budget: Option<Decimal>,
        engine: ExecutionEngine,
    ) -> Result<wflo_db::Execution> {
        let exec = self
            .inner
            .db
            .executions()
            .create(NewExecution {
                id: options.execution_id,
                workflow_id: stored.id,
                workflow_name: Some(stored.name.clone()),
                inputs,
                budget_usd: budget,
                trace_id: options.trace_id.clone(),
                correlation_id: options.correlation_id.clone(),
                engine,
            })
            .await?;
        if let Some(limit) = budget {
            self.inner
                .costs
                .set_budget(
                    &Scope::Execution(exec.id),
                    Period::Total,
                    chrono::Utc::now(),
                    limit,
                )
                .await?;
        }
        Ok(exec)
    }

    /// Creates a PENDING execution of `def` with its budget, without running it.
    pub async fn create_execution(
        &self,
        def: &WorkflowDef,
        options: &RunOptions,
    ) -> Result<ExecutionId> {
        self.create_execution_on(def, options, ExecutionEngine::Local)
            .await
    }

    /// [`Engine::create_execution`] for an execution driven by `engine`.
    pub(crate) async fn create_execution_on(
        &self,
        def: &WorkflowDef,
        options: &RunOptions,
        engine: ExecutionEngine,
    ) -> Result<ExecutionId> {
        // Refused before the definition or the execution is written.
        def.require_llm_provider(self.inner.llm.is_some())?;
        let stored = self.store_definition(def).await?;
        let mut inputs = serde_json::Map::new();
        for (k, d) in &def.inputs {
            if let Some(v) = &d.default {
                inputs.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &options.inputs {
            if !def.inputs.is_empty() && !def.inputs.contains_key(k) {
                return Err(Error::Definition {
                    step: None,
                    line: None,
                    message: format!(
                        "unknown input `{k}`; declared inputs: {}",
                        def.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            inputs.insert(k.clone(), v.clone());
        }
        for k in def.inputs.keys() {
            if !inputs.contains_key(k) {
                return Err(Error::Definition {
                    step: None,
                    line: None,
                    message: format!("input `{k}` has no default; give it with --input {k}=VALUE"),
                });
            }
        }
        let budget = options.budget_usd.or(def.policies.budget_usd);
        self.insert_execution(&stored, options, Value::Object(inputs), budget, engine)
            .await
            .map(|e| e.id)
    }

    /// Runs a definition to its end: creates the execution and drives it.
    pub async fn run(&self, def: &WorkflowDef, options: RunOptions) -> Result<RunOutcome> {
        let id = self.create_execution(def, &options).await?;
        self.drive(id, def, options).await
    }

    /// Continues an execution after a crash, a failure or a rollback: completed steps are not
    /// run again (a paid LLM call is never repeated); the first incomplete step runs next.
    pub async fn resume(
        &self,
        execution_id: ExecutionId,
        options: RunOptions,
    ) -> Result<RunOutcome> {
        let exec = self.inner.db.executions().get(execution_id).await?;
        if exec.status.is_final() {
            return Err(Error::InvalidState(format!(
                "execution {execution_id} is {}; only unfinished or failed executions can resume",
                exec.status
            )));
        }
        let stored = self.inner.db.definitions().get(exec.workflow_id).await?;
        let def = WorkflowDef::from_json(&stored.definition)?;
        self.drive(execution_id, &def, options).await
    }

    /// Runs a Rust closure as a workflow named `name`: each `ctx.llm`, `ctx.code`,
    /// `ctx.checkpoint`, `ctx.approval` and `ctx.tool` call is a durable step keyed by its id.
    /// Rerunning with the same `options.execution_id` reuses completed steps.
    pub async fn run_fn<F, Fut>(&self, name: &str, options: RunOptions, f: F) -> Result<RunOutcome>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: std::future::Future<Output = Result<Value>>,
    {
        let def = WorkflowDef {
            name: name.to_string(),
            description: Some("a workflow written in Rust".into()),
            inputs: Default::default(),
            policies: crate::definition::Policies {
                budget_usd: options.budget_usd,
                ..Default::default()
            },
            steps: Vec::new(),
        };
        let existing = match options.execution_id {
            Some(id) => match self.inner.db.executions().get(id).await {
                Ok(exec) => Some(exec),
                Err(wflo_db::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let exec = match existing {
            Some(exec) => exec,
            None => self.create_closure_execution(&def, &options).await?,
        };
        let ctx = self.context_of(exec, &options).await?;
        self.lifecycle(ctx.clone(), None, async move { f(ctx).await })
            .await
    }

    async fn create_closure_execution(
        &self,
        def: &WorkflowDef,
        options: &RunOptions,
    ) -> Result<wflo_db::Execution> {
        let doc = json!({"kind": "rust-closure", "name": def.name});
        let stored = self
            .store_document(&def.name, def.description.clone(), doc)
            .await?;
        self.insert_execution(
            &stored,
            options,
            Value::Object(options.inputs.clone()),
            options.budget_usd,
            ExecutionEngine::Local,
        )
        .await
    }

    pub(crate) async fn context(&self, id: ExecutionId, options: &RunOptions) -> Result<Ctx> {
        let exec = self.inner.db.executions().get(id).await?;
        self.context_of(exec, options).await
    }

    /// [`Engine::context`] on an execution row already read.
    pub(crate) async fn context_of(
        &self,
        exec: wflo_db::Execution,
        options: &RunOptions,
    ) -> Result<Ctx> {
        let id = exec.id;
        // Variables come back from the newest snapshot that a rollback has not superseded.
        let vars = match self.inner.db.snapshots().latest(id).await? {
            Some(s) => s.state.get("vars").cloned().unwrap_or(json!({})),
            None => json!({}),
        };
        // Every step row of the execution, read once: memoization then needs no query per step.
        let steps = self
            .inner
            .db
            .steps()
            .list(id)
            .await?
            .into_iter()
            .map(|s| (s.step_key.clone(), s))
            .collect();
        let ctx = self.bare_context(&exec, options);
        {
            let mut st = ctx
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.vars = vars.as_object().cloned().unwrap_or_default();
        }
        *ctx.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = steps;
        Ok(ctx)
    }

    /// A context on `exec` without its variables or step rows: enough to change the
    /// execution's status with its event (no query).
    pub(crate) fn bare_context(&self, exec: &wflo_db::Execution, options: &RunOptions) -> Ctx {
        let budget = exec.budget_usd;
        let inputs = exec.inputs.clone();
        let mut scopes = vec![Scope::Execution(exec.id)];
        scopes.extend(options.scopes.iter().cloned());
        Ctx {
            engine: self.clone(),
            execution: exec.id,
            labels: Arc::new(events::labels_of(exec)),
            budget,
            scopes,
            observer: options.observer.clone(),
            state: Arc::new(std::sync::Mutex::new(RunState {
                inputs,
                outputs: serde_json::Map::new(),
                vars: serde_json::Map::new(),
            })),
            steps: Arc::new(std::sync::Mutex::new(HashMap::new())),
            lease: Arc::new(std::sync::OnceLock::new()),
            pending_events: Default::default(),
        }
    }

    async fn drive(
        &self,
        id: ExecutionId,
        def: &WorkflowDef,
        options: RunOptions,
    ) -> Result<RunOutcome> {
        let ctx = self.context(id, &options).await?;
        let order = def.run_order()?;
        let def2 = def.clone();
        let c = ctx.clone();
        let body = async move {
            for step_id in order {
                let step = def2.step(&step_id).expect("ordered ids exist").clone();
                c.run_definition_step(&def2, &step).await?;
            }
            Ok(Value::Object(c.outputs()))
        };
        self.lifecycle(ctx, def.policies.timeout, body).await
    }

    /// Takes the execution's lease (refused while another driver holds it), then RUNNING, the
    /// body, COMPLETED or FAILED with their events, and gives the lease up.
    async fn lifecycle<Fut>(
        &self,
        ctx: Ctx,
        timeout: Option<Duration>,
        body: Fut,
    ) -> Result<RunOutcome>
    where
        Fut: std::future::Future<Output = Result<Value>>,
    {
        let id = ctx.execution;
        let config = &self.inner.config;
        let driving = crate::lease::Driving::acquire(
            &self.inner.db,
            id,
            &config.driver_name,
            config.lease_ttl,
        )
        .await?;
        let _ = ctx.lease.set(driving.held.clone());
        self.leases().insert(id, driving.held.clone());
        let budget = ctx.budget.map(|b| b.to_string());
        let span = tracing::info_span!(
            "wflo.run",
            execution_id = %id,
            workflow = %ctx.labels.workflow,
            driver = %config.driver_name,
            budget_usd = budget.as_deref(),
        );
        let result = async {
            tracing::info!("run started");
            let result = self.driven(ctx, timeout, body).await;
            match &result {
                Ok(out) => tracing::info!(status = %out.status, "run finished"),
                Err(e) => tracing::warn!(error = %e, "run stopped"),
            }
            result
        }
        .instrument(span)
        .await;
        self.leases().remove(&id);
        if let Err(e) = driving.release(&self.inner.db).await {
            tracing::warn!(execution = %id, error = %e, "could not release the lease; it expires by itself");
        }
        result
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Arc<crate::lease::Held>>> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops driving an execution whose run this process abandoned (Ctrl-C: its future was
    /// dropped mid-step): releases every budget reservation it still holds and gives up the
    /// lease, so the execution is left resumable at once by any process. Returns how many
    /// reservations were released.
    pub async fn interrupt(&self, execution_id: ExecutionId) -> Result<usize> {
        let released = self.costs().release_for_execution(execution_id).await?;
        let held = self.leases().remove(&execution_id);
        if let Some(held) = held {
            self.inner
                .db
                .executions()
                .release_lease(execution_id, &held.current())
                .await?;
        }
        Ok(released)
    }

    /// Cancels an unfinished in-process execution on behalf of `actor`: CANCELLED with its
    /// event, every budget reservation it holds released, steps left RUNNING marked FAILED, and
    /// an `audit` event naming the actor. Its driver stops before its next step: at once when
    /// it is this engine, at its next lease renewal (within a third of the lease) when it is
    /// another process. Cancelling a cancelled execution changes nothing; a COMPLETED one is
    /// [`Error::InvalidState`]; a Temporal one is cancelled through its workflow instead.
    pub async fn cancel(
        &self,
        execution_id: ExecutionId,
        actor: &str,
        reason: &str,
    ) -> Result<wflo_db::Execution> {
        let db = &self.inner.db;
        let exec = db.executions().get(execution_id).await?;
        if exec.status == wflo_db::ExecutionStatus::Cancelled {
            return Ok(exec);
        }
        if exec.status.is_final() {
            return Err(Error::InvalidState(format!(
                "execution {execution_id} is {}; only unfinished executions can be cancelled",
                exec.status
            )));
        }
        if exec.engine != ExecutionEngine::Local {
            return Err(Error::InvalidState(format!(
                "execution {execution_id} runs on temporal; cancel it through its workflow \
                 (wflo-{execution_id})"
            )));
        }
        if let Some(held) = self.leases().get(&execution_id) {
            held.lose();
        }
        self.cancel_execution(execution_id, reason).await?;
        let exec = db.executions().get(execution_id).await?;
        self.record_audit(&exec, actor, "execution.cancel", json!({"reason": reason}))
            .await?;
        Ok(exec)
    }

    /// Writes an `audit` event: `actor` did `action` (`execution.start`, `execution.resume`,
    /// …) on execution `exec`, with `details`.
    pub async fn record_audit(
        &self,
        exec: &wflo_db::Execution,
        actor: &str,
        action: &str,
        details: Value,
    ) -> Result<()> {
        self.inner
            .db
            .outbox()
            .enqueue(events::outbox(
                events::audit(
                    actor,
                    action,
                    format!("execution/{}", exec.id),
                    details,
                    true,
                ),
                exec.id,
                &events::labels_of(exec),
            ))
            .await?;
        Ok(())
    }

    /// Releases the budget reservations of in-process executions whose driver is gone (its
    /// lease expired: the process died, or stopped without a clean end). Returns the
    /// executions concerned and how many reservations each gave back.
    pub async fn release_abandoned(&self) -> Result<Vec<(ExecutionId, usize)>> {
        let mut out = Vec::new();
        for exec in self
            .inner
            .db
            .executions()
            .without_driver(chrono::Utc::now())
            .await?
        {
            let n = self.costs().release_for_execution(exec.id).await?;
            if n > 0 {
                tracing::info!(execution = %exec.id, released = n, "released the reservations of a run whose driver is gone");
            }
            out.push((exec.id, n));
        }
        Ok(out)
    }

    /// RUNNING, the body, then COMPLETED or FAILED, each with its event.
    async fn driven<Fut>(
        &self,
        ctx: Ctx,
        timeout: Option<Duration>,
        body: Fut,
    ) -> Result<RunOutcome>
    where
        Fut: std::future::Future<Output = Result<Value>>,
    {
        let id = ctx.execution;
        ctx.set_execution_status(ExecutionStatus::Running, Outcome::default())
            .await?;
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, body).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: format!("workflow `{}`", ctx.labels.workflow),
                    after: t,
                })
            }),
            None => body.await,
        };
        match result {
            Ok(outputs) => {
                let exec = ctx
                    .set_execution_status(
                        ExecutionStatus::Completed,
                        Outcome {
                            outputs: Some(outputs.clone()),
                            error: None,
                        },
                    )
                    .await?;
                Ok(RunOutcome {
                    execution_id: id,
                    status: exec.status,
                    outputs,
                    cost_usd: exec.cost_usd,
                    budget_usd: ctx.budget,
                })
            }
            // A driver that lost its lease writes nothing more: another one drives now.
            Err(e @ Error::Db(wflo_db::Error::LeaseLost { .. })) => Err(e),
            Err(e) => {
                let text = e.to_string();
                if let Err(db_err) = ctx
                    .set_execution_status(
                        ExecutionStatus::Failed,
                        Outcome {
                            outputs: None,
                            error: Some(text),
                        },
                    )
                    .await
                {
                    tracing::error!(execution = %id, error = %db_err, "could not record the failure");
                }
                Err(e)
            }
        }
    }
}
