//! The values that cross the wire: workflow inputs and outputs, approval decisions, run status.
//! Plain serde types of this crate (no Temporal SDK type appears in them).

use crate::config::ActivityRetry;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Retry and timeout policy of the activities of one run, chosen when the run starts and
/// recorded in its history (so replays and restarted workers schedule the same activities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ActivityPolicy {
    pub(crate) initial_interval: Duration,
    pub(crate) backoff_coefficient: f64,
    pub(crate) maximum_interval: Duration,
    pub(crate) maximum_attempts: u32,
    pub(crate) start_to_close: Duration,
}

impl ActivityPolicy {
    pub(crate) fn new(retry: &ActivityRetry, start_to_close: Duration) -> Self {
        ActivityPolicy {
            initial_interval: retry.initial_interval,
            backoff_coefficient: retry.backoff_coefficient,
            maximum_interval: retry.maximum_interval,
            maximum_attempts: retry.maximum_attempts,
            start_to_close,
        }
    }
}

/// A program for `CodeExecutionWorkflow(code, timeout)`. It runs as the one `code` step of an
/// execution of the [`CODE_WORKFLOW`] definition, through wflo-runtime's step logic (memoized,
/// with its step row and its `sandbox.execution` event); its resource limits are those of the
/// worker engine's sandbox configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodeExecutionRequest {
    /// `python` or `bash`.
    pub language: String,
    /// The program.
    pub code: String,
    /// Wall-clock limit; the container is killed after it.
    pub timeout: Duration,
}

/// The name of the one-step definition a `CodeExecutionWorkflow` run records its execution
/// under (its step is [`CODE_STEP`]).
pub const CODE_WORKFLOW: &str = "code-execution";

/// The step id of a `CodeExecutionWorkflow` run's code step.
pub const CODE_STEP: &str = "code";

impl CodeExecutionRequest {
    /// Python `code` with a 30 s timeout.
    pub fn python(code: impl Into<String>) -> Self {
        CodeExecutionRequest {
            language: "python".into(),
            code: code.into(),
            timeout: Duration::from_secs(30),
        }
    }
    /// Bash `code` with a 30 s timeout.
    pub fn bash(code: impl Into<String>) -> Self {
        CodeExecutionRequest {
            language: "bash".into(),
            ..CodeExecutionRequest::python(code)
        }
    }
    /// Sets the wall-clock timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Refuses bad input (empty code, unknown language, bad timeout) before any run.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.code.trim().is_empty() {
            return Err(Error::InvalidRequest("the code to run is empty".into()));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidRequest(
                "the code's timeout must be greater than zero".into(),
            ));
        }
        wflo_sandbox::ExecRequest::builder(self.code.clone())
            .language(&self.language)
            .timeout(self.timeout)
            .build()?;
        Ok(())
    }

    /// The execution's inputs: the definition's step renders them.
    pub(crate) fn inputs(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("language".into(), self.language.clone().into());
        m.insert("code".into(), self.code.clone().into());
        m.insert(
            "timeout_secs".into(),
            serde_json::Value::String(self.timeout.as_secs_f64().to_string()),
        );
        m
    }

    /// The one-step definition every code run records under (the same for every program, so
    /// it is stored once: the program is an input of the execution).
    pub(crate) fn definition() -> Result<wflo_runtime::WorkflowDef> {
        let mut def = wflo_runtime::WorkflowDef::builder(CODE_WORKFLOW)
            .input("language", None)
            .input("code", None)
            .input("timeout_secs", None)
            .step(
                CODE_STEP,
                wflo_runtime::StepKind::Code,
                &[],
                serde_json::json!({
                    "language": "{{ inputs.language }}",
                    "code": "{{ inputs.code }}",
                    "sandbox_timeout_secs": "{{ inputs.timeout_secs }}",
                }),
            )
            .build()
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        def.description = Some("one program in the sandbox (CodeExecutionWorkflow)".into());
        Ok(def)
    }
}

/// What a code run produced: stdout and stderr apart, exit code, and how it ended (the
/// output of its `code` step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodeExecutionOutput {
    /// The execution the run recorded under (its step [`CODE_STEP`] holds this output).
    pub execution_id: wflo_types::ExecutionId,
    /// `succeeded` (a program that fails, times out or is killed fails the run instead).
    pub status: String,
    /// The exit code.
    pub exit_code: i64,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Stdout went over the output limit.
    pub stdout_truncated: bool,
    /// The timeout was hit and the container killed.
    pub timed_out: bool,
    /// The OOM killer ended the program.
    pub oom_killed: bool,
    /// Wall time of the program.
    pub duration_ms: u64,
}

impl CodeExecutionOutput {
    /// Exit code 0, no timeout, no OOM kill.
    pub fn success(&self) -> bool {
        self.exit_code == 0 && !self.timed_out && !self.oom_killed
    }

    /// From the code step's typed output.
    pub(crate) fn of(execution_id: wflo_types::ExecutionId, o: wflo_types::CodeOutput) -> Self {
        CodeExecutionOutput {
            execution_id,
            status: o.status,
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
            stdout_truncated: o.stdout_truncated,
            timed_out: o.timed_out,
            oom_killed: o.oom_killed,
            duration_ms: o.duration_ms,
        }
    }
}

/// The status of a run, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum RunStatus {
    /// Still running.
    Running,
    /// Completed.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Terminated.
    Terminated,
    /// Continued as a new run.
    ContinuedAsNew,
    /// Timed out.
    TimedOut,
    /// Paused.
    Paused,
    /// A status this crate does not know.
    Unknown,
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkflowRun {
    /// The workflow id.
    pub workflow_id: String,
    /// The run id.
    pub run_id: String,
    /// The workflow type, e.g. `SimpleWorkflow`.
    pub workflow_type: String,
    /// Its status.
    pub status: RunStatus,
    /// When it started.
    pub start_time: Option<SystemTime>,
    /// When it closed.
    pub close_time: Option<SystemTime>,
}

/// A worker that polls a task queue, as the server saw it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Poller {
    /// The worker's identity (`pid@host` unless configured).
    pub identity: String,
    /// When it last asked for a task.
    pub last_access: Option<SystemTime>,
}

/// A started run: its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartedRun {
    /// The workflow id.
    pub workflow_id: String,
    /// The first run's id.
    pub run_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_requests_are_validated_before_a_run() {
        assert!(CodeExecutionRequest::python("print(1)").validate().is_ok());
        let e = CodeExecutionRequest {
            language: "cobol".into(),
            ..CodeExecutionRequest::python("x")
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("unknown language"), "{e}");
        assert!(CodeExecutionRequest::python("  ").validate().is_err());
        let e = CodeExecutionRequest::python("print(1)")
            .timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidRequest(_)), "{e}");
    }

    #[test]
    fn a_code_request_is_an_execution_of_one_code_step() {
        let def = CodeExecutionRequest::definition().unwrap();
        assert_eq!(def.name, CODE_WORKFLOW);
        assert_eq!(def.steps.len(), 1);
        assert_eq!(def.steps[0].id, CODE_STEP);
        assert_eq!(def.steps[0].kind, wflo_runtime::StepKind::Code);
        let inputs = CodeExecutionRequest::bash("echo hi")
            .timeout(Duration::from_millis(1500))
            .inputs();
        assert_eq!(inputs["language"], "bash");
        assert_eq!(inputs["code"], "echo hi");
        assert_eq!(inputs["timeout_secs"], "1.5");
        assert!(def.inputs.keys().all(|k| inputs.contains_key(k)));
    }

    #[test]
    fn wire_values_round_trip() {
        let r = CodeExecutionRequest::bash("echo hi").timeout(Duration::from_millis(1500));
        let back: CodeExecutionRequest =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}

/// What starts a code run: its program and the execution it records under (chosen by the
/// client, so a retried activity opens the same execution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct CodeRun {
    pub(crate) execution_id: wflo_types::ExecutionId,
    pub(crate) request: CodeExecutionRequest,
}

/// What starts a `WfloWorkflow`: a definition (inline, validated before the start), its
/// inputs, a budget, and the execution id the run records under (chosen by the client, so a
/// retried start names the same execution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct WfloInput {
    pub(crate) execution_id: wflo_types::ExecutionId,
    /// The definition as JSON (`WorkflowDef`).
    pub(crate) definition: serde_json::Value,
    pub(crate) inputs: serde_json::Map<String, serde_json::Value>,
    pub(crate) budget_usd: Option<rust_decimal::Decimal>,
    pub(crate) policy: ActivityPolicy,
}

/// A step of the plan `open_execution` returns, in run order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct PlannedStep {
    pub(crate) id: String,
    pub(crate) approval: bool,
}

/// One step of one execution (the argument of the step activities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct StepRef {
    pub(crate) execution_id: wflo_types::ExecutionId,
    pub(crate) step: String,
}

/// What a step activity reports back: the step's output and the execution's spend after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct StepDone {
    pub(crate) output: serde_json::Value,
    pub(crate) cost_usd: rust_decimal::Decimal,
}

/// An approval request as the workflow sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct ApprovalTicket {
    pub(crate) approval_id: wflo_types::ApprovalId,
    pub(crate) message: String,
    /// Still waiting for a decision.
    pub(crate) pending: bool,
    /// How long to wait before the timeout policy applies (none: wait for a decision).
    pub(crate) timeout: Option<Duration>,
}

/// Closes an approval: with a decision from a signal, or (none) by its timeout policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct CloseApproval {
    pub(crate) approval_id: wflo_types::ApprovalId,
    pub(crate) decision: Option<(bool, ApprovalSignal)>,
}

/// Ends an execution: completed with outputs, or failed with the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct FinishExecution {
    pub(crate) execution_id: wflo_types::ExecutionId,
    pub(crate) result: std::result::Result<serde_json::Value, String>,
}

/// Cancels an execution (CANCELLED, reservations released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct CancelExecution {
    pub(crate) execution_id: wflo_types::ExecutionId,
    pub(crate) reason: String,
}

/// The `approve` / `reject` signal of a `WfloWorkflow`: which approval, who, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalSignal {
    /// The approval request (from the `pending_approval` query or `wflo approvals list`).
    pub approval_id: wflo_types::ApprovalId,
    /// Who decides.
    pub approver: String,
    /// Why.
    pub reason: Option<String>,
}

impl ApprovalSignal {
    /// A decision on `approval_id` by `approver`.
    pub fn new(approval_id: wflo_types::ApprovalId, approver: impl Into<String>) -> Self {
        ApprovalSignal {
            approval_id,
            approver: approver.into(),
            reason: None,
        }
    }

    /// With a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// An approval a `WfloWorkflow` waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingApproval {
    /// The approval request.
    pub approval_id: wflo_types::ApprovalId,
    /// The step it gates.
    pub step: String,
    /// What the approver is asked.
    pub message: String,
}

/// Where a `WfloWorkflow` run stands (its `status` query).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WfloStatus {
    /// The execution the run records under (once saved).
    pub execution_id: Option<wflo_types::ExecutionId>,
    /// `STARTING`, `RUNNING`, `WAITING_APPROVAL`, `COMPLETED`, `FAILED` or `CANCELLED`.
    pub status: String,
    /// The step running now.
    pub current_step: Option<String>,
    /// Steps completed, in order.
    pub completed_steps: Vec<String>,
    /// The execution's spend so far (exact).
    pub cost_usd: rust_decimal::Decimal,
    /// The approval the run waits for.
    pub pending_approval: Option<PendingApproval>,
    /// Why the run failed or was cancelled.
    pub error: Option<String>,
}

/// How a `WfloWorkflow` run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WfloOutcome {
    /// The execution.
    pub execution_id: wflo_types::ExecutionId,
    /// Its final status (`COMPLETED`).
    pub status: String,
    /// The outputs of its steps, by step id.
    pub outputs: serde_json::Value,
    /// What it spent (exact).
    pub cost_usd: rust_decimal::Decimal,
}
