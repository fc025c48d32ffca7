//! # Wflo — a secure runtime for AI-agent workflows
//!
//! This is Wflo's one public, semver'd crate: everything a program embedding Wflo needs is here,
//! re-exported from the inner crates (whose own APIs may change in any release).
//!
//! * **Budgets that cannot be overshot**: every LLM call reserves its worst-case cost before it
//!   is made and settles the provider's usage after ([`cost`]).
//! * **A locked-down sandbox** for agent-written code ([`sandbox`]).
//! * **Approval gates and rollback** to snapshots ([`Engine::rollback`], [`Ctx::approval`]).
//! * **Everything recorded**: runs, steps, costs and decisions in PostgreSQL or SQLite, events
//!   through a transactional outbox to Kafka ([`db`], [`bus`]).
//!
//! [`Config::from_env`] is the only place Wflo reads environment variables; every service but
//! the database is optional, and the embedded default needs none:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wflo_core::Error> {
//! use wflo_core::{Config, RunOptions, Wflo, WorkflowDef};
//!
//! let config = Config::builder().database_url("sqlite::memory:").build()?;
//! let wflo = Wflo::connect(config).await?;
//! let def = WorkflowDef::from_yaml(
//!     "name: hello\nsteps:\n  - id: save\n    kind: checkpoint\n",
//! )?;
//! let outcome = wflo.engine().run(&def, RunOptions::default()).await?;
//! assert_eq!(outcome.status.as_str(), "COMPLETED");
//! # Ok(()) }
//! ```

mod config;

pub use config::{Config, ConfigBuilder, DEFAULT_DATABASE_URL, LlmSettings};

use std::sync::Arc;

/// The error of running workflows ([`Engine`] methods return it).
pub use wflo_runtime::Error as RuntimeError;
pub use wflo_runtime::{
    ApprovalCall, ApprovalPolicy, CodeCall, Ctx, Engine, EngineBuilder, EngineConfig, FnTool,
    InputDef, LlmCall, Observer, Policies, RetryPolicy, RollbackOutcome, RunOptions, RunOutcome,
    StepDef, StepKind, Tool, WorkflowBuilder, WorkflowDef, action_fingerprint, extract_code,
};

/// The shared vocabulary: statuses, token usage, events and their payloads, step kinds and
/// typed step outputs — the same types every layer (and the HTTP API) speaks.
pub mod types {
    pub use wflo_types::{
        AlertType, ApprovalOutput, ApprovalPayload, ApprovalStatus, AuditPayload, CheckpointOutput,
        CodeOutput, CostPayload, Error, EventEnvelope, EventPayload, EventType, ExecutionStatus,
        LlmOutput, RollbackStatus, SandboxPayload, StepKind, StepOutput, StepStatus,
        StepStatusPayload, TokenUsage, ToolOutput, Usd, WorkflowStatusPayload, topic,
    };
}

/// Persistence: executions, steps, snapshots, approvals, rollbacks, the outbox.
pub mod db {
    /// The persistence layer's error (inside [`crate::Error::Db`]).
    pub use wflo_db::Error;
    pub use wflo_db::{
        Approval, ApprovalStatus, Backend, Db, DbConfig, Definition, Driver, Execution,
        ExecutionEngine, ExecutionStatus, Executor, Lease, RiskLevel, Rollback, RollbackStatus,
        SchemaStatus, Snapshot, Step, StepStatus, TimeoutPolicy, Tokens, Tx, redact,
    };
}

/// Prices, token counting, cost tracking and budgets.
pub mod cost {
    /// The cost layer's error (inside [`crate::Error::Cost`]).
    pub use wflo_cost::Error;
    pub use wflo_cost::{
        BudgetPolicy, BudgetState, CostBreakdown, CostConfig, CostEstimate, CostQuery, CostSummary,
        CostTracker, Period, PriceCatalog, Scope, TokenUsage,
    };
}

/// LLM providers.
pub mod llm {
    /// The providers' error (inside [`crate::Error::Llm`]).
    pub use wflo_llm::Error;
    pub use wflo_llm::{
        ChatRequest, ChatResponse, LlmProvider, ProviderConfig, ReplayProvider, Usage,
        create_provider,
    };
}

/// The Docker sandbox.
pub mod sandbox {
    /// The sandbox's error (inside [`crate::Error::Sandbox`]).
    pub use wflo_sandbox::Error;
    pub use wflo_sandbox::{
        ExecRequest, ExecStatus, ExecutionResult, Language, Limits, NetworkPolicy, SandboxConfig,
        SandboxRuntime,
    };
}

/// Redis locks and the LLM response cache (and their in-process twins).
pub mod cache {
    /// Redis's error (inside [`crate::Error::Cache`]).
    pub use wflo_cache::Error;
    pub use wflo_cache::{LlmCache, LlmCacheConfig, RedisClient, RedisConfig};
}

/// Events, the Kafka producer and consumer, and the outbox relay.
pub mod bus {
    /// The event bus's error (inside [`crate::Error::Bus`]).
    pub use wflo_bus::Error;
    pub use wflo_bus::{
        Bus, BusConfig, CancellationToken, EventEnvelope, EventPayload, EventType, Relay,
        RelayConfig, RelayCounts,
    };
}

/// The durable engine on Temporal: worker, client, `WfloWorkflow` (configured from
/// `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TASK_QUEUE`; see
/// [`Config::temporal_config`]).
pub mod temporal {
    /// The Temporal engine's error (inside [`crate::Error::Temporal`]).
    pub use wflo_temporal::Error;
    pub use wflo_temporal::{
        ApprovalSignal, PendingApproval, Poller, RunStatus, StartedRun, TemporalClient,
        TemporalConfig, TemporalWorker, WfloOutcome, WfloStatus, WorkerBuilder, WorkerHandle,
        wflo_workflow_id,
    };
}

/// How a decision reached the run that waits for it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Delivery {
    /// The in-process engine: the waiting run reads the decided row (within its poll interval).
    Local,
    /// Signalled to the execution's `WfloWorkflow` on Temporal.
    Temporal {
        /// The workflow.
        workflow_id: String,
        /// The task queue its workers poll.
        task_queue: String,
        /// Workers that polled that queue recently (none: the run continues once one runs).
        pollers: Vec<temporal::Poller>,
    },
    /// The execution's workflow is no longer running on Temporal: the decision is recorded,
    /// and no run waits for it.
    WorkflowClosed {
        /// The workflow.
        workflow_id: String,
        /// How it ended.
        status: temporal::RunStatus,
    },
}

/// A decision taken and delivered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decided {
    /// The decided approval request.
    pub approval: db::Approval,
    /// How the run learns of it.
    pub delivery: Delivery,
}

/// Everything that can fail in Wflo, by layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Running workflows.
    #[error(transparent)]
    Runtime(#[from] wflo_runtime::Error),
    /// The database.
    #[error(transparent)]
    Db(#[from] wflo_db::Error),
    /// Costs and budgets.
    #[error(transparent)]
    Cost(#[from] wflo_cost::Error),
    /// LLM providers.
    #[error(transparent)]
    Llm(#[from] wflo_llm::Error),
    /// The sandbox.
    #[error(transparent)]
    Sandbox(#[from] wflo_sandbox::Error),
    /// Redis.
    #[error(transparent)]
    Cache(#[from] wflo_cache::Error),
    /// Kafka.
    #[error(transparent)]
    Bus(#[from] wflo_bus::Error),
    /// Temporal.
    #[error(transparent)]
    Temporal(#[from] wflo_temporal::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Config {
    /// The sandbox image code steps run in (`WFLO_SANDBOX_IMAGE`, else the default image).
    pub fn sandbox_image(&self) -> &str {
        self.sandbox_image
            .as_deref()
            .unwrap_or(wflo_sandbox::DEFAULT_IMAGE)
    }
}

/// A connected Wflo: the database, the cost tracker, the engine, and the optional services.
#[derive(Clone, Debug)]
pub struct Wflo {
    config: Arc<Config>,
    db: wflo_db::Db,
    engine: Engine,
}

impl Wflo {
    /// Connects what the configuration names: the database (migrated), Redis for the response
    /// cache when `REDIS_URL` is set (else an in-process cache), the LLM provider when a key or
    /// a cassette is configured, the sandbox (connected on first code step).
    pub async fn connect(config: Config) -> Result<Wflo> {
        Self::connect_with(config, |b| b).await
    }

    /// Like [`Wflo::connect`], letting the caller add to the engine (tools, a provider).
    pub async fn connect_with(
        config: Config,
        customize: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Result<Wflo> {
        let db = wflo_db::Db::connect(&config.db_config()?).await?;
        let catalog = config.price_catalog()?;
        let costs =
            wflo_cost::CostTracker::new(db.clone(), catalog, wflo_cost::CostConfig::default());
        let cache_config = wflo_cache::LlmCacheConfig::builder().build()?;
        let cache = match config.redis_config()? {
            Some(redis) => {
                let client = wflo_cache::RedisClient::connect(&redis).await?;
                wflo_cache::LlmCache::redis(client, cache_config)
            }
            None => wflo_cache::LlmCache::in_process(10_000, cache_config),
        };
        let mut engine_config = EngineConfig::builder();
        if let Some(ttl) = config.lease_ttl {
            engine_config = engine_config.lease_ttl(ttl);
        }
        let mut builder = Engine::builder(db.clone())
            .costs(costs)
            .cache(cache)
            .config(engine_config.build()?)
            .sandbox(config.sandbox_config()?);
        if let Some(provider) = config.llm_provider()? {
            builder = builder.llm(provider);
        }
        let engine = customize(builder).build()?;
        Ok(Wflo {
            config: Arc::new(config),
            db,
            engine,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database.
    pub fn db(&self) -> &wflo_db::Db {
        &self.db
    }

    /// The in-process engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops what the engine started (the sandbox's warm containers).
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
    }

    /// Decides an approval request once, on whichever engine drives its execution: the decision
    /// is taken by the conditional update of the approval row (the first decision stands; a
    /// second one is [`RuntimeError::AlreadyDecided`] naming the winner), recorded with its
    /// actor and reason, and only then delivered. A run on Temporal gets it as its workflow's
    /// `approve`/`reject` signal (no worker needed: the run continues when one polls) and acts
    /// on the stored decision, never on the signal's content. For such a run, Temporal must be
    /// configured (`TEMPORAL_ADDRESS`) and reachable *before* anything is recorded: otherwise
    /// the error says what is missing and the request stays pending.
    pub async fn decide_approval(
        &self,
        approval_id: uuid::Uuid,
        approve: bool,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Decided> {
        use wflo_db::Executor as _;
        let approval = self.db.approvals().get(approval_id).await?;
        let exec = self.db.executions().get(approval.execution_id).await?;
        if exec.engine != wflo_db::ExecutionEngine::Temporal {
            let approval = self
                .engine
                .decide(approval_id, approve, actor, reason)
                .await?;
            return Ok(Decided {
                approval,
                delivery: Delivery::Local,
            });
        }
        let Some(temporal) = self.config.temporal_config()? else {
            return Err(Error::Config(format!(
                "approval {approval_id} belongs to execution {} which runs on temporal (workflow \
                 {}); set TEMPORAL_ADDRESS (and TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE as the \
                 worker has them) so the decision reaches its workflow; nothing was recorded",
                exec.id,
                wflo_temporal::wflo_workflow_id(exec.id)
            )));
        };
        let client = wflo_temporal::TemporalClient::connect(temporal).await?;
        let workflow_id = wflo_temporal::wflo_workflow_id(exec.id);
        let decided = self
            .engine
            .decide(approval_id, approve, actor, reason)
            .await;
        // Whoever decided, the workflow is told what is stored: a second decider also delivers
        // (the winner may have died between recording and signalling).
        let stored = match &decided {
            Ok(a) => a.clone(),
            Err(RuntimeError::AlreadyDecided { .. }) => {
                self.db.approvals().get(approval_id).await?
            }
            Err(_) => return Err(decided.unwrap_err().into()),
        };
        let delivery = Self::deliver(&client, &workflow_id, &stored).await?;
        let approval = decided?;
        Ok(Decided { approval, delivery })
    }

    /// Signals a stored decision to a Temporal run (a closed workflow needs none).
    async fn deliver(
        client: &wflo_temporal::TemporalClient,
        workflow_id: &str,
        stored: &wflo_db::Approval,
    ) -> Result<Delivery> {
        let run = client.describe(workflow_id).await?;
        if run.status != wflo_temporal::RunStatus::Running {
            return Ok(Delivery::WorkflowClosed {
                workflow_id: workflow_id.to_string(),
                status: run.status,
            });
        }
        let mut signal = wflo_temporal::ApprovalSignal::new(
            stored.id,
            stored
                .decided_by
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        );
        if let Some(r) = &stored.decision_reason {
            signal = signal.reason(r.clone());
        }
        match stored.status {
            wflo_db::ApprovalStatus::Approved => client.wflo_approve(workflow_id, signal).await?,
            _ => client.wflo_reject(workflow_id, signal).await?,
        }
        let pollers = client.pollers().await?;
        Ok(Delivery::Temporal {
            workflow_id: workflow_id.to_string(),
            task_queue: client.config().task_queue().to_string(),
            pollers,
        })
    }

    /// The outbox relay to Kafka, when `KAFKA_BOOTSTRAP_SERVERS` is set.
    pub async fn relay(&self) -> Result<Option<wflo_bus::Relay>> {
        let Some(servers) = &self.config.kafka_bootstrap else {
            return Ok(None);
        };
        let bus = wflo_bus::Bus::connect(wflo_bus::BusConfig::builder(servers).build()?).await?;
        Ok(Some(wflo_bus::Relay::new(
            bus,
            self.db.clone(),
            wflo_bus::RelayConfig::builder().build()?,
        )))
    }
}
