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
//! Every failure is an [`Error`]: which layer failed, what kind of failure it is
//! ([`Error::kind`]) and whether trying again may help ([`Error::is_retryable`]).
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
mod error;
mod logging;
mod ops;
mod summary;

pub use config::{Config, ConfigBuilder, DEFAULT_DATABASE_URL, LlmSettings};
pub use error::{Error, ErrorKind, Result};
pub use logging::{LogConfig, LogFormat};
pub use ops::{StartRun, Started, WorkflowSource};
pub use summary::{ExecutionSummary, StepSummary};

use std::sync::Arc;

/// The error of running workflows ([`Engine`] methods return it).
pub use wflo_runtime::Error as RuntimeError;
pub use wflo_runtime::{
    ApprovalCall, ApprovalPolicy, ApprovalTicket, CodeCall, Ctx, Engine, EngineBuilder,
    EngineConfig, EngineConfigBuilder, FnTool, InputDef, LlmCall, Observer, PlannedStep, Policies,
    RetryPolicy, RollbackOutcome, RunOptions, RunOutcome, StepDef, StepKind, StepReport, Tool,
    ToolError, WorkflowBuilder, WorkflowDef, action_fingerprint, extract_code,
};

/// The shared vocabulary: statuses, token usage, events and their payloads, step kinds and
/// typed step outputs — the same types every layer (and the HTTP API) speaks.
///
/// ```
/// use wflo_core::types::{ExecutionStatus, RunLabels, StepStatus, TokenUsage, canonical_json};
///
/// let labels = RunLabels::workflow("hello");
/// assert_eq!(labels.workflow, "hello");
/// assert_eq!(ExecutionStatus::Completed.as_str(), "COMPLETED");
/// assert_eq!(StepStatus::Failed.as_str(), "FAILED");
/// let _ = TokenUsage::default();
/// assert_eq!(canonical_json(&serde_json::json!({"b": 1, "a": 2})), r#"{"a":2,"b":1}"#);
/// ```
pub mod types {
    pub use wflo_types::{
        AlertType, ApprovalId, ApprovalOutput, ApprovalPayload, ApprovalStatus, AuditPayload,
        CheckpointOutput, CodeOutput, CostPayload, Error, EventEnvelope, EventPayload, EventType,
        ExecutionId, ExecutionStatus, HEADER_EVENT_ID, HEADER_EVENT_TYPE, LlmOutput, ReservationId,
        Role, RollbackStatus, RunLabels, SCHEMA_VERSION, SandboxPayload, SnapshotId, StepId,
        StepKind, StepOutput, StepStatus, StepStatusPayload, TokenUsage, ToolOutput, Usd,
        WorkflowStatusPayload, canonical_json, redact_url, topic,
    };
}

/// Persistence: executions, steps, snapshots, approvals, rollbacks, budgets, the cost ledger,
/// the outbox, webhooks — the repositories and the rows they take and return.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wflo_core::Error> {
/// use wflo_core::db::{Db, DbConfig, Executor as _, NewDefinition, NewExecution};
///
/// let db = Db::connect(&DbConfig::builder("sqlite::memory:").build()?).await?;
/// let def = db
///     .definitions()
///     .create(NewDefinition::new("hello", serde_json::json!({"steps": []})))
///     .await?;
/// let exec = db
///     .executions()
///     .create(NewExecution::new(def.id, serde_json::json!({})))
///     .await?;
/// assert_eq!(db.executions().get(exec.id).await?.id, exec.id);
/// # Ok(()) }
/// ```
pub mod db {
    /// The persistence layer's error (inside [`crate::Error::Db`]).
    pub use wflo_db::Error;
    pub use wflo_db::{
        AlertEventFn, ApiToken, ApiTokens, Approval, ApprovalDecision, ApprovalStatus, Approvals,
        Backend, Budget, BudgetAlert, BudgetKey, BudgetOp, BudgetOpOutcome, Budgets,
        ChargeRecorded, ClaimedDelivery, ConsumerOffsets, CostEntry, CostEventFn, CostFilter,
        CostTotals, Costs, Db, DbConfig, DbConfigBuilder, Definition, Definitions, DeliveryOutcome,
        DeliveryStatus, Driver, Execution, ExecutionEngine, ExecutionFilter, ExecutionStatus,
        Executions, Executor, Lease, LedgerTokens, NewApproval, NewBudget, NewCostEntry,
        NewDefinition, NewExecution, NewOutboxEvent, NewReservation, NewRollback, NewStep,
        NewWebhook, Outbox, OutboxEvent, Outcome, Reservation, ReservationStatus, ReserveOutcome,
        RiskLevel, Rollback, RollbackStatus, Rollbacks, SchemaStatus, Settle, Settlement, Snapshot,
        Snapshots, Step, StepStatus, Steps, ThresholdCrossed, TimeoutPolicy, Tokens, Tx, Webhook,
        WebhookDelivery, WebhookEvent, WebhookFormat, Webhooks, money, redact,
    };
}

/// Prices, token counting, cost tracking and budgets: reserve the worst case before a call,
/// settle the provider's usage after it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wflo_core::Error> {
/// use rust_decimal::Decimal;
/// use wflo_core::cost::{
///     BudgetReservation, CostConfig, CostTracker, PriceCatalog, ReserveRequest, Scope, Settled,
///     TokenUsage,
/// };
/// use wflo_core::db::{Db, DbConfig};
///
/// let db = Db::connect(&DbConfig::builder("sqlite::memory:").build()?).await?;
/// let costs = CostTracker::new(db, PriceCatalog::embedded().clone(), CostConfig::default());
/// let reservation: BudgetReservation = costs
///     .reserve(&ReserveRequest {
///         request_id: "call-1".into(),
///         scopes: vec![Scope::Tenant("acme".into())],
///         amount_usd: Decimal::new(1, 2),
///         execution_id: None,
///         labels: None,
///     })
///     .await?;
/// let usage = TokenUsage::new("gpt-4o-mini", 1_000, 200);
/// let settled: Settled = costs.settle(&reservation, None, &usage).await?;
/// assert!(settled.charged_usd > Decimal::ZERO);
/// # Ok(()) }
/// ```
pub mod cost {
    /// The cost layer's error (inside [`crate::Error::Cost`]).
    pub use wflo_cost::Error;
    pub use wflo_cost::{
        BUDGET_ALERT_EVENT, BudgetPolicy, BudgetReservation, BudgetState, CLAUDE_ESTIMATE_PERCENT,
        COSTS_TOPIC, ChatMessage, CostBreakdown, CostConfig, CostConfigBuilder, CostEstimate,
        CostQuery, CostSummary, CostTracker, EMBEDDED_PRICES, EVENT_SOURCE, ModelPrice, Period,
        PriceCatalog, PriceCatalogBuilder, PricedModel, REPLY_PRIMING_TOKENS, ReserveRequest,
        Scope, Settled, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, ThresholdAlert, TokenCount,
        TokenUsage, Tokenizer, Tracked,
    };
    /// The labels of a run (workflow, trace and correlation ids) a [`ReserveRequest`] carries.
    pub use wflo_types::RunLabels;
}

/// LLM providers: requests, responses, configuration, retries and the circuit breaker, replay.
pub mod llm {
    /// The providers' error (inside [`crate::Error::Llm`]).
    pub use wflo_llm::Error;
    pub use wflo_llm::{
        ANTHROPIC_API_KEY_VAR, ANTHROPIC_BASE_URL, AnthropicProvider, ApiKey, AuthScheme,
        BreakerConfig, BreakerConfigBuilder, ChatRequest, ChatRequestBuilder, ChatResponse,
        ChatStream, CircuitState, FinishReason, LlmProvider, MaxTokensField, Message,
        OPENAI_API_KEY_VAR, OPENAI_BASE_URL, OpenAiProvider, ProviderConfig, ProviderConfigBuilder,
        ProviderFactory, ProviderRegistry, ReplayProvider, ResponseFormat, RetryConfig,
        RetryConfigBuilder, Role, StreamEvent, Tool, ToolCall, ToolChoice, Usage, create_provider,
        request_hash,
    };
}

/// The Docker sandbox.
pub mod sandbox {
    /// The sandbox's error (inside [`crate::Error::Sandbox`]).
    pub use wflo_sandbox::Error;
    pub use wflo_sandbox::{
        DEFAULT_DOCKER_SOCKET, DEFAULT_IMAGE, ExecRequest, ExecRequestBuilder, ExecStatus,
        ExecutionResult, Language, Limits, MAX_ENV_BYTES, MAX_ENV_VAR_BYTES, MAX_ENV_VARS,
        MAX_FILES, MAX_FILES_BYTES, MAX_STDIN_BYTES, ManagedContainer, NetworkPolicy,
        SandboxConfig, SandboxConfigBuilder, SandboxRuntime,
    };
}

/// Fenced distributed locks and the LLM response cache, on Redis or in-process.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), wflo_core::Error> {
/// use std::time::Duration;
/// use wflo_core::cache::{
///     CacheValue, DistributedLock, LlmCache, LlmCacheConfig, LlmCacheKey, LockOptions,
/// };
///
/// let locks = DistributedLock::in_process();
/// let opts = LockOptions::builder(Duration::from_secs(5)).no_renewal().build()?;
/// let first = locks.try_acquire("report", &opts).await?.expect("free");
/// assert!(locks.try_acquire("report", &opts).await?.is_none());
/// let token = first.fencing_token();
/// first.release().await?;
/// let second = locks.try_acquire("report", &opts).await?.expect("released");
/// assert!(second.fencing_token() > token, "a later holder has a larger fencing token");
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Answer(String);
/// impl CacheValue for Answer {
///     const KIND: &'static str = "answer";
///     const SCHEMA_VERSION: u32 = 1;
/// }
///
/// let cache = LlmCache::in_process(100, LlmCacheConfig::builder().build()?);
/// let key = LlmCacheKey::builder("app", "gpt-4o-mini")
///     .messages(serde_json::json!([{"role": "user", "content": "hi"}]))
///     .temperature(0.0)
///     .build()?;
/// cache.set(&key, &Answer("hello".into())).await?;
/// let hit: Option<Answer> = cache.get(&key).await?;
/// assert_eq!(hit.map(|a| a.0).as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
pub mod cache {
    /// Redis's error (inside [`crate::Error::Cache`]).
    pub use wflo_cache::Error;
    pub use wflo_cache::{
        CacheStats, CacheValue, CancellationToken, DistributedLock, FencingToken, Health,
        InProcessLocks, InProcessResponseCache, LlmCache, LlmCacheConfig, LlmCacheConfigBuilder,
        LlmCacheKey, LlmCacheKeyBuilder, LockGuard, LockOptions, LockOptionsBuilder, LockService,
        RedisClient, RedisConfig, RedisConfigBuilder, RedisLocks, RedisResponseCache,
        ResponseCache, StoredEntry,
    };
}

/// Events, the Kafka producer and consumer, and the outbox relay.
pub mod bus {
    /// The event bus's error (inside [`crate::Error::Bus`]).
    pub use wflo_bus::Error;
    pub use wflo_bus::{
        AlertType, ApprovalPayload, AuditPayload, Bus, BusConfig, BusConfigBuilder,
        CancellationToken, CleanupPolicy, Compression, Consumer, ConsumerConfig,
        ConsumerConfigBuilder, ConsumerCounts, CostPayload, Delivery, Event, EventEnvelope,
        EventPayload, EventType, HEADER_DLQ_GROUP, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION,
        HEADER_DLQ_REASON, HEADER_DLQ_TOPIC, HEADER_EVENT_ID, HEADER_EVENT_TYPE, Handler,
        HandlerError, Message, OutgoingMessage, PartitionStream, Relay, RelayConfig,
        RelayConfigBuilder, RelayCounts, RetryPolicy, SCHEMA_VERSION, SandboxPayload, StartFrom,
        StepStatusPayload, TopicInfo, TopicSpec, TxHandler, WorkflowStatusPayload,
        dead_letter_name, names, standard_topics,
    };
}

/// The durable engine on Temporal: worker, client, `WfloWorkflow` (configured from
/// `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TASK_QUEUE`; see
/// [`Config::temporal_config`]).
pub mod temporal {
    /// The Temporal engine's error (inside [`crate::Error::Temporal`]).
    pub use wflo_temporal::Error;
    pub use wflo_temporal::{
        ActivityRetry, ApprovalSignal, CODE_STEP, CODE_WORKFLOW, CodeExecutionOutput,
        CodeExecutionRequest, DEFAULT_ADDRESS, DEFAULT_NAMESPACE, DEFAULT_TASK_QUEUE,
        PendingApproval, Poller, RunStatus, StartedRun, TemporalClient, TemporalConfig,
        TemporalConfigBuilder, TemporalWorker, WfloOutcome, WfloStatus, WorkerBuilder,
        WorkerHandle, WorkflowRun, wflo_workflow_id,
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
        if let Some(name) = &config.driver_name {
            engine_config = engine_config.driver_name(name.clone());
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
        approval_id: impl Into<wflo_types::ApprovalId>,
        approve: bool,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Decided> {
        use wflo_db::Executor as _;
        let approval_id: wflo_types::ApprovalId = approval_id.into();
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
            wflo_db::ApprovalStatus::Approved => client.approve(workflow_id, signal).await?,
            _ => client.reject(workflow_id, signal).await?,
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
