//! [`TemporalClient`]: start, signal, query, cancel, await, describe and list runs.

use crate::config::TemporalConfig;
use crate::error::chain;
use crate::types::{
    ActivityPolicy, ApprovalSignal, CodeExecutionOutput, CodeExecutionRequest, PendingApproval,
    Poller, RunStatus, StartedRun, WfloInput, WfloOutcome, WfloStatus, WorkflowRun,
};
use crate::workflows::{
    CodeExecutionInput, CodeExecutionWorkflow, NoopInput, NoopWorkflow, SimpleWorkflow,
    WfloWorkflow,
};
use crate::{Error, Result};
use futures::StreamExt;
use std::time::Duration;
use temporalio_client::errors::{
    WorkflowGetResultError, WorkflowInteractionError, WorkflowQueryError, WorkflowStartError,
};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowCancelOptions,
    WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
    WorkflowListOptions, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::HasWorkflowDefinition;

/// A connection to Temporal bound to one namespace and task queue. Cheap to clone.
#[derive(Clone)]
pub struct TemporalClient {
    pub(crate) client: Client,
    pub(crate) config: TemporalConfig,
}

impl std::fmt::Debug for TemporalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalClient")
            .field("address", &self.config.address())
            .field("namespace", &self.config.namespace)
            .field("task_queue", &self.config.task_queue)
            .finish()
    }
}

pub(crate) async fn connect(config: &TemporalConfig) -> Result<Client> {
    let unreachable = |reason: String| Error::Unreachable {
        address: config.address().trim_end_matches('/').to_string(),
        reason,
    };
    let mut options = ConnectionOptions::new(config.address.clone())
        .connect_timeout(config.connect_timeout)
        .build();
    if let Some(identity) = &config.identity {
        options.identity = identity.clone();
    }
    let connection = tokio::time::timeout(config.connect_timeout * 2, Connection::connect(options))
        .await
        .map_err(|_| unreachable(format!("no answer within {:?}", config.connect_timeout * 2)))?
        .map_err(|e| unreachable(chain(&e)))?;
    Client::new(
        connection,
        ClientOptions::new(config.namespace.clone()).build(),
    )
    .map_err(|e| Error::Rpc {
        operation: "create client",
        message: chain(&e),
    })
}

/// The workflow id of the `WfloWorkflow` run of an execution.
pub fn wflo_workflow_id(execution_id: wflo_types::ExecutionId) -> String {
    format!("wflo-{execution_id}")
}

fn status_of(s: WorkflowExecutionStatus) -> RunStatus {
    match s {
        WorkflowExecutionStatus::Running => RunStatus::Running,
        WorkflowExecutionStatus::Completed => RunStatus::Completed,
        WorkflowExecutionStatus::Failed => RunStatus::Failed,
        WorkflowExecutionStatus::Canceled => RunStatus::Cancelled,
        WorkflowExecutionStatus::Terminated => RunStatus::Terminated,
        WorkflowExecutionStatus::ContinuedAsNew => RunStatus::ContinuedAsNew,
        WorkflowExecutionStatus::TimedOut => RunStatus::TimedOut,
        WorkflowExecutionStatus::Paused => RunStatus::Paused,
        _ => RunStatus::Unknown,
    }
}

impl TemporalClient {
    /// Connects; an unreachable server is [`Error::Unreachable`], naming the address and how to
    /// start a dev server.
    pub async fn connect(config: TemporalConfig) -> Result<TemporalClient> {
        let client = connect(&config).await?;
        Ok(TemporalClient { client, config })
    }

    /// The configuration.
    pub fn config(&self) -> &TemporalConfig {
        &self.config
    }

    fn policy(&self) -> ActivityPolicy {
        ActivityPolicy::new(&self.config.activity_retry, self.config.activity_timeout)
    }

    fn interaction_error(
        &self,
        workflow_id: &str,
        operation: &'static str,
        e: WorkflowInteractionError,
    ) -> Error {
        match e {
            WorkflowInteractionError::NotFound(_) => Error::NotFound {
                workflow_id: workflow_id.to_string(),
                namespace: self.config.namespace.clone(),
            },
            other => Error::Rpc {
                operation,
                message: chain(&other),
            },
        }
    }

    pub(crate) async fn start<W>(
        &self,
        workflow: W,
        workflow_id: &str,
        input: W::Input,
    ) -> Result<StartedRun>
    where
        W: HasWorkflowDefinition,
        W::Input: Send,
    {
        if workflow_id.trim().is_empty() {
            return Err(Error::InvalidRequest("the workflow id is empty".into()));
        }
        let options =
            WorkflowStartOptions::new(self.config.task_queue.clone(), workflow_id.to_string())
                .build();
        let handle = self
            .client
            .start_workflow(workflow, input, options)
            .await
            .map_err(|e| match e {
                WorkflowStartError::AlreadyStarted { .. } => Error::AlreadyStarted {
                    workflow_id: workflow_id.to_string(),
                },
                WorkflowStartError::Rpc(status)
                    if status.code() == temporalio_client::tonic::Code::Unavailable =>
                {
                    Error::Unreachable {
                        address: self.config.address().trim_end_matches('/').to_string(),
                        reason: status.message().to_string(),
                    }
                }
                other => Error::Rpc {
                    operation: "start workflow",
                    message: chain(&other),
                },
            })?;
        Ok(StartedRun {
            workflow_id: workflow_id.to_string(),
            run_id: handle.run_id().map(str::to_string),
        })
    }

    pub(crate) async fn result<W: HasWorkflowDefinition>(
        &self,
        workflow_id: &str,
    ) -> Result<W::Output>
    where
        W::Output: 'static,
    {
        let handle = self.client.get_workflow_handle::<W>(workflow_id);
        let id = || workflow_id.to_string();
        handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .map_err(|e| match e {
                WorkflowGetResultError::Failed(f) => Error::WorkflowFailed {
                    workflow_id: id(),
                    message: chain(&*f),
                },
                WorkflowGetResultError::Cancelled { .. } => Error::Cancelled { workflow_id: id() },
                WorkflowGetResultError::Terminated { .. } => {
                    Error::Terminated { workflow_id: id() }
                }
                WorkflowGetResultError::TimedOut => Error::TimedOut { workflow_id: id() },
                WorkflowGetResultError::NotFound(_) => Error::NotFound {
                    workflow_id: id(),
                    namespace: self.config.namespace.clone(),
                },
                other => Error::Rpc {
                    operation: "await workflow result",
                    message: chain(&other),
                },
            })
    }

    /// Starts `SimpleWorkflow(name)`.
    pub async fn start_simple(&self, workflow_id: &str, name: &str) -> Result<StartedRun> {
        self.start(SimpleWorkflow::run, workflow_id, name.to_string())
            .await
    }

    /// Awaits `SimpleWorkflow`'s greeting.
    pub async fn simple_result(&self, workflow_id: &str) -> Result<String> {
        self.result::<SimpleWorkflow>(workflow_id).await
    }

    /// Starts `CodeExecutionWorkflow(code, timeout)`: the program runs as the one `code` step
    /// of a new execution (a UUIDv7 chosen here, in the output of
    /// [`code_execution_result`](Self::code_execution_result)) through wflo-runtime, so it
    /// leaves a step row and a `sandbox.execution` event like any code step; its limits are
    /// the worker engine's sandbox configuration. A request that fails validation (unknown
    /// language, empty code, bad timeout) is refused before anything starts.
    pub async fn start_code_execution(
        &self,
        workflow_id: &str,
        request: CodeExecutionRequest,
    ) -> Result<StartedRun> {
        request.validate()?;
        let input = CodeExecutionInput {
            execution_id: wflo_types::ExecutionId::new(),
            request,
            policy: self.policy(),
        };
        self.start(CodeExecutionWorkflow::run, workflow_id, input)
            .await
    }

    /// Awaits `CodeExecutionWorkflow`: the code step's output, or [`Error::WorkflowFailed`]
    /// naming how the program ended (`code failed (exit 3): ...`, `code timed_out ...`) when it
    /// did not succeed, or why it could not run.
    pub async fn code_execution_result(&self, workflow_id: &str) -> Result<CodeExecutionOutput> {
        self.result::<CodeExecutionWorkflow>(workflow_id).await
    }

    /// Starts a workflow of `activities` no-op activities (engine overhead benchmarks).
    pub async fn start_noop(&self, workflow_id: &str, activities: u32) -> Result<StartedRun> {
        let input = NoopInput {
            activities,
            policy: self.policy(),
        };
        self.start(NoopWorkflow::run, workflow_id, input).await
    }

    /// Awaits a no-op workflow: the number of activities that ran.
    pub async fn noop_result(&self, workflow_id: &str) -> Result<u32> {
        self.result::<NoopWorkflow>(workflow_id).await
    }

    /// Starts `WfloWorkflow` for a definition (validated here: a definition that fails
    /// validation is refused before anything starts). The run records under `execution_id`
    /// (pick a new UUIDv7 per run; the workflow id is `wflo-<execution id>`).
    pub async fn start_wflo(
        &self,
        execution_id: wflo_types::ExecutionId,
        definition: &wflo_runtime::WorkflowDef,
        inputs: serde_json::Map<String, serde_json::Value>,
        budget_usd: Option<rust_decimal::Decimal>,
    ) -> Result<StartedRun> {
        definition
            .validate()
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        if budget_usd.is_some_and(|b| b <= rust_decimal::Decimal::ZERO) {
            return Err(Error::InvalidRequest(
                "the budget must be greater than zero".into(),
            ));
        }
        let json = serde_json::to_value(definition).map_err(|e| Error::Payload {
            what: "the workflow definition",
            message: e.to_string(),
        })?;
        let input = WfloInput {
            execution_id,
            definition: json,
            inputs,
            budget_usd,
            policy: self.policy(),
        };
        self.start(WfloWorkflow::run, &wflo_workflow_id(execution_id), input)
            .await
    }

    /// Awaits a `WfloWorkflow` run: its outcome, or [`Error::WorkflowFailed`] with the step's
    /// error (a budget refusal, a rejection, ...), or [`Error::Cancelled`].
    pub async fn wflo_result(&self, workflow_id: &str) -> Result<WfloOutcome> {
        self.result::<WfloWorkflow>(workflow_id).await
    }

    async fn wflo_query<T, F>(&self, workflow_id: &str, query: &'static str, run: F) -> Result<T>
    where
        F: AsyncFnOnce(
            temporalio_client::WorkflowHandle<Client, WfloWorkflow>,
        ) -> std::result::Result<T, WorkflowQueryError>,
    {
        let handle = self.client.get_workflow_handle::<WfloWorkflow>(workflow_id);
        run(handle).await.map_err(|e| match e {
            WorkflowQueryError::NotFound(_) => Error::NotFound {
                workflow_id: workflow_id.to_string(),
                namespace: self.config.namespace.clone(),
            },
            other => Error::Query {
                workflow_id: workflow_id.to_string(),
                query,
                message: chain(&other),
            },
        })
    }

    /// The `status` query of a `WfloWorkflow` run.
    pub async fn wflo_status(&self, workflow_id: &str) -> Result<WfloStatus> {
        self.wflo_query(workflow_id, "status", async |h| {
            h.query(WfloWorkflow::status, (), WorkflowQueryOptions::default())
                .await
        })
        .await
    }

    /// The step a `WfloWorkflow` run is on (the `current_step` query).
    pub async fn wflo_current_step(&self, workflow_id: &str) -> Result<Option<String>> {
        self.wflo_query(workflow_id, "current_step", async |h| {
            h.query(
                WfloWorkflow::current_step,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
        })
        .await
    }

    /// What a `WfloWorkflow` run has spent so far (the `cost` query).
    pub async fn wflo_cost(&self, workflow_id: &str) -> Result<rust_decimal::Decimal> {
        self.wflo_query(workflow_id, "cost", async |h| {
            h.query(WfloWorkflow::cost, (), WorkflowQueryOptions::default())
                .await
        })
        .await
    }

    /// The approval a `WfloWorkflow` run waits for (the `pending_approval` query).
    pub async fn wflo_pending_approval(
        &self,
        workflow_id: &str,
    ) -> Result<Option<PendingApproval>> {
        self.wflo_query(workflow_id, "pending_approval", async |h| {
            h.query(
                WfloWorkflow::pending_approval,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
        })
        .await
    }

    /// Delivers an approval decision to a `WfloWorkflow` run (the `approve` signal). The run acts
    /// on the decision stored in the database, where it is taken once: record it first
    /// (`wflo_core::Wflo::decide_approval` does both); a signal for an approval whose row is
    /// still pending decides it, first come first served, at the database. A blank approver is
    /// refused before anything is sent; a closed or unknown run is [`Error::NotFound`].
    pub async fn approve(&self, workflow_id: &str, signal: ApprovalSignal) -> Result<()> {
        self.decide(workflow_id, true, signal).await
    }

    /// Rejects the approval a `WfloWorkflow` run waits for (the `reject` signal), as
    /// [`approve`](Self::approve).
    pub async fn reject(&self, workflow_id: &str, signal: ApprovalSignal) -> Result<()> {
        self.decide(workflow_id, false, signal).await
    }

    async fn decide(&self, workflow_id: &str, approve: bool, signal: ApprovalSignal) -> Result<()> {
        if signal.approver.trim().is_empty() {
            return Err(Error::InvalidRequest("an approver must be named".into()));
        }
        // No query first: a query needs a live worker, a signal does not (the server keeps it
        // in the run's history until a worker replays it). The run acts on the decision stored
        // in the database, so a signal is only the notice that it is there.
        let handle = self.client.get_workflow_handle::<WfloWorkflow>(workflow_id);
        let r = if approve {
            handle
                .signal(
                    WfloWorkflow::approve,
                    signal,
                    WorkflowSignalOptions::default(),
                )
                .await
        } else {
            handle
                .signal(
                    WfloWorkflow::reject,
                    signal,
                    WorkflowSignalOptions::default(),
                )
                .await
        };
        r.map_err(|e| self.interaction_error(workflow_id, "signal", e))
    }

    /// The workers that polled this client's task queue for workflow tasks recently (the
    /// server keeps a poller for a few minutes after its last poll; `last_access` tells how
    /// recent). Needs no worker.
    pub async fn pollers(&self) -> Result<Vec<Poller>> {
        use temporalio_client::grpc::WorkflowService;
        use temporalio_client::tonic::IntoRequest;
        use temporalio_common::protos::temporal::api::enums::v1::{TaskQueueKind, TaskQueueType};
        use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
        use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeTaskQueueRequest;
        let mut client = self.client.clone();
        let request = DescribeTaskQueueRequest {
            namespace: self.config.namespace.clone(),
            task_queue: Some(TaskQueue {
                name: self.config.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                ..Default::default()
            }),
            task_queue_type: TaskQueueType::Workflow as i32,
            ..Default::default()
        }
        .into_request();
        let response = WorkflowService::describe_task_queue(&mut client, request)
            .await
            .map_err(|status| {
                if status.code() == temporalio_client::tonic::Code::Unavailable {
                    Error::Unreachable {
                        address: self.config.address().trim_end_matches('/').to_string(),
                        reason: status.message().to_string(),
                    }
                } else {
                    Error::Rpc {
                        operation: "describe task queue",
                        message: status.message().to_string(),
                    }
                }
            })?
            .into_inner();
        Ok(response
            .pollers
            .into_iter()
            .map(|p| Poller {
                identity: p.identity,
                last_access: p.last_access_time.and_then(|t| {
                    let secs = u64::try_from(t.seconds).ok()?;
                    let nanos = u32::try_from(t.nanos).ok()?;
                    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
                }),
            })
            .collect())
    }

    /// Asks a `WfloWorkflow` run to stop (the `cancel_request` signal): it ends cancelled, its
    /// execution CANCELLED with its budget reservations released.
    pub async fn wflo_cancel_request(&self, workflow_id: &str, reason: &str) -> Result<()> {
        self.client
            .get_workflow_handle::<WfloWorkflow>(workflow_id)
            .signal(
                WfloWorkflow::cancel_request,
                reason.to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| self.interaction_error(workflow_id, "signal", e))
    }

    /// Requests cancellation; the run observes it and ends as cancelled.
    pub async fn cancel(&self, workflow_id: &str, reason: &str) -> Result<()> {
        let handle = self
            .client
            .get_workflow_handle::<temporalio_client::UntypedWorkflow>(workflow_id);
        handle
            .cancel(
                WorkflowCancelOptions::builder()
                    .reason(reason.to_string())
                    .build(),
            )
            .await
            .map_err(|e| self.interaction_error(workflow_id, "cancel", e))
    }

    /// The latest run of `workflow_id`.
    pub async fn describe(&self, workflow_id: &str) -> Result<WorkflowRun> {
        let handle = self
            .client
            .get_workflow_handle::<temporalio_client::UntypedWorkflow>(workflow_id);
        let d = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| self.interaction_error(workflow_id, "describe", e))?;
        Ok(WorkflowRun {
            workflow_id: d.id().to_string(),
            run_id: d.run_id().to_string(),
            workflow_type: d.workflow_type().to_string(),
            status: status_of(d.status()),
            start_time: d.start_time(),
            close_time: d.close_time(),
        })
    }

    /// Runs matching a visibility query (e.g. `WorkflowType = 'SimpleWorkflow'`; empty: all),
    /// newest first, at most `limit`.
    pub async fn list(&self, query: &str, limit: usize) -> Result<Vec<WorkflowRun>> {
        let mut stream = self.client.list_workflows(
            query.to_string(),
            WorkflowListOptions::builder().limit(limit).build(),
        );
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let w = item.map_err(|e| Error::Rpc {
                operation: "list workflows",
                message: chain(&e),
            })?;
            out.push(WorkflowRun {
                workflow_id: w.id().to_string(),
                run_id: w.run_id().to_string(),
                workflow_type: w.workflow_type().to_string(),
                status: status_of(w.status()),
                start_time: w.start_time(),
                close_time: w.close_time(),
            });
        }
        Ok(out)
    }

    /// Waits until the run of `workflow_id` reaches a closed status, polling `describe`.
    pub async fn wait_closed(&self, workflow_id: &str, within: Duration) -> Result<WorkflowRun> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let run = self.describe(workflow_id).await?;
            if run.status != RunStatus::Running || tokio::time::Instant::now() >= deadline {
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(feature = "testing")]
impl TemporalClient {
    /// Starts a probe workflow (feature `testing`).
    pub async fn start_probe(
        &self,
        workflow_id: &str,
        steps: Vec<crate::testing::ProbeStep>,
    ) -> Result<StartedRun> {
        let input = crate::testing::ProbeInput {
            steps,
            policy: self.policy(),
        };
        self.start(crate::testing::ProbeWorkflow::run, workflow_id, input)
            .await
    }

    /// Awaits a probe workflow (feature `testing`).
    pub async fn probe_result(&self, workflow_id: &str) -> Result<Vec<String>> {
        self.result::<crate::testing::ProbeWorkflow>(workflow_id)
            .await
    }
}
