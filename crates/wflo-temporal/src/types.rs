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

/// Resource limits of one code run (unset: the sandbox's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodeLimits {
    /// Memory in bytes (no swap).
    pub memory_bytes: Option<u64>,
    /// CPUs, e.g. 0.5.
    pub cpus: Option<f64>,
    /// Processes and threads.
    pub pids: Option<u32>,
    /// Bytes kept of stdout and, separately, of stderr.
    pub output_bytes: Option<usize>,
}

impl CodeLimits {
    /// Sets the memory limit.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }
    /// Sets the CPU limit.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }
    /// Sets the process limit.
    pub fn pids(mut self, pids: u32) -> Self {
        self.pids = Some(pids);
        self
    }
    /// Sets the output limit.
    pub fn output_bytes(mut self, bytes: usize) -> Self {
        self.output_bytes = Some(bytes);
        self
    }
}

/// A program for `CodeExecutionWorkflow(code, timeout, limits)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodeExecutionRequest {
    /// `python` or `bash`.
    pub language: String,
    /// The program.
    pub code: String,
    /// Wall-clock limit; the container is killed after it.
    pub timeout: Duration,
    /// Resource limits.
    pub limits: CodeLimits,
    /// Standard input.
    pub stdin: Option<String>,
}

impl CodeExecutionRequest {
    /// Python `code` with a 30 s timeout and the sandbox's default limits.
    pub fn python(code: impl Into<String>) -> Self {
        CodeExecutionRequest {
            language: "python".into(),
            code: code.into(),
            timeout: Duration::from_secs(30),
            limits: CodeLimits::default(),
            stdin: None,
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
    /// Sets the limits.
    pub fn limits(mut self, limits: CodeLimits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets standard input.
    pub fn stdin(mut self, stdin: impl Into<String>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// The sandbox request; refuses bad input (unknown language, bad limits) before any run.
    pub(crate) fn to_exec_request(&self) -> Result<wflo_sandbox::ExecRequest> {
        if self.code.trim().is_empty() {
            return Err(Error::InvalidRequest("the code to run is empty".into()));
        }
        let mut b = wflo_sandbox::ExecRequest::builder(self.code.clone())
            .language(&self.language)
            .timeout(self.timeout);
        if let Some(s) = &self.stdin {
            b = b.stdin(s.clone());
        }
        if let Some(m) = self.limits.memory_bytes {
            b = b.memory_bytes(m);
        }
        if let Some(c) = self.limits.cpus {
            b = b.cpus(c);
        }
        if let Some(p) = self.limits.pids {
            b = b.pids(p);
        }
        if let Some(o) = self.limits.output_bytes {
            b = b.output_limit(o);
        }
        Ok(b.build()?)
    }
}

/// What a code run produced: stdout and stderr apart, exit code, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodeExecutionOutput {
    /// The sandbox's id.
    pub sandbox_id: uuid::Uuid,
    /// `succeeded`, `failed`, `timed_out` or `oom_killed`.
    pub status: String,
    /// The exit code (137 after a kill).
    pub exit_code: i64,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Stdout went over the output limit.
    pub stdout_truncated: bool,
    /// Stderr went over the output limit.
    pub stderr_truncated: bool,
    /// The timeout was hit and the container killed.
    pub timed_out: bool,
    /// The OOM killer ended the program.
    pub oom_killed: bool,
    /// Wall time of the program.
    pub duration_ms: u64,
    /// Served by a warm pooled container.
    pub warm: bool,
}

impl CodeExecutionOutput {
    /// Exit code 0, no timeout, no OOM kill.
    pub fn success(&self) -> bool {
        self.status == "succeeded"
    }
}

impl From<wflo_sandbox::ExecutionResult> for CodeExecutionOutput {
    fn from(r: wflo_sandbox::ExecutionResult) -> Self {
        CodeExecutionOutput {
            sandbox_id: r.sandbox_id,
            status: r.status.as_str().to_string(),
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            timed_out: r.timed_out,
            oom_killed: r.oom_killed,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            warm: r.warm,
        }
    }
}

/// What happens when nobody decides an approval in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnTimeout {
    /// The request expires and counts as rejected (the default).
    #[default]
    Reject,
    /// The request is approved by `system:timeout`.
    Approve,
}

/// A request for a human decision, waited for durably (`ApprovalWorkflow`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// What the approver is asked.
    pub message: String,
    /// Time to decide (a durable timer: it survives worker restarts).
    pub timeout: Duration,
    /// What happens at the timeout.
    pub on_timeout: OnTimeout,
}

impl ApprovalRequest {
    /// A request with `message`, decided within `timeout` or rejected.
    pub fn new(message: impl Into<String>, timeout: Duration) -> Self {
        ApprovalRequest {
            message: message.into(),
            timeout,
            on_timeout: OnTimeout::Reject,
        }
    }
    /// Sets the timeout policy.
    pub fn on_timeout(mut self, policy: OnTimeout) -> Self {
        self.on_timeout = policy;
        self
    }
}

/// Who decides and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// The approver.
    pub approver: String,
    /// Why.
    pub reason: Option<String>,
}

impl Decision {
    /// A decision by `approver`.
    pub fn by(approver: impl Into<String>) -> Self {
        Decision {
            approver: approver.into(),
            reason: None,
        }
    }
    /// Adds the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    #[default]
    Pending,
    /// Approved (by a person, or by the timeout policy).
    Approved,
    /// Rejected by a person.
    Rejected,
    /// Nobody decided in time and the policy rejects.
    Expired,
}

/// An approval's state (the answer of the `status` query and the workflow's result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalState {
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who decided (`system:timeout` for the timeout policy).
    pub decided_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Decisions that arrived after the first one and were refused.
    pub late_decisions: u32,
}

impl ApprovalState {
    /// Approved, by anyone.
    pub fn approved(&self) -> bool {
        self.status == ApprovalStatus::Approved
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
        assert!(
            CodeExecutionRequest::python("print(1)")
                .to_exec_request()
                .is_ok()
        );
        let e = CodeExecutionRequest {
            language: "cobol".into(),
            ..CodeExecutionRequest::python("x")
        }
        .to_exec_request()
        .unwrap_err();
        assert!(e.to_string().contains("unknown language"), "{e}");
        assert!(
            CodeExecutionRequest::python("  ")
                .to_exec_request()
                .is_err()
        );
        let e = CodeExecutionRequest::python("print(1)")
            .limits(CodeLimits::default().cpus(-1.0))
            .to_exec_request()
            .unwrap_err();
        assert!(matches!(e, Error::Sandbox(_)), "{e}");
    }

    #[test]
    fn wire_values_round_trip() {
        let r = CodeExecutionRequest::bash("echo hi")
            .timeout(Duration::from_millis(1500))
            .limits(CodeLimits::default().memory_bytes(64 << 20));
        let back: CodeExecutionRequest =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let s = ApprovalState {
            status: ApprovalStatus::Expired,
            decided_by: Some("system:timeout".into()),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&s).unwrap()["status"], "EXPIRED");
    }
}

/// What starts a `WfloWorkflow`: a definition (inline, validated before the start), its
/// inputs, a budget, and the execution id the run records under (chosen by the client, so a
/// retried start names the same execution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct WfloInput {
    pub(crate) execution_id: uuid::Uuid,
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
    pub(crate) execution_id: uuid::Uuid,
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
    pub(crate) approval_id: uuid::Uuid,
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
    pub(crate) approval_id: uuid::Uuid,
    pub(crate) decision: Option<(bool, ApprovalSignal)>,
}

/// Ends an execution: completed with outputs, or failed with the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct FinishExecution {
    pub(crate) execution_id: uuid::Uuid,
    pub(crate) result: std::result::Result<serde_json::Value, String>,
}

/// Cancels an execution (CANCELLED, reservations released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(unreachable_pub)] // crosses the wire; not part of the crate's API
pub struct CancelExecution {
    pub(crate) execution_id: uuid::Uuid,
    pub(crate) reason: String,
}

/// The `approve` / `reject` signal of a `WfloWorkflow`: which approval, who, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalSignal {
    /// The approval request (from the `pending_approval` query or `wflo approvals list`).
    pub approval_id: uuid::Uuid,
    /// Who decides.
    pub approver: String,
    /// Why.
    pub reason: Option<String>,
}

impl ApprovalSignal {
    /// A decision on `approval_id` by `approver`.
    pub fn new(approval_id: uuid::Uuid, approver: impl Into<String>) -> Self {
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
    pub approval_id: uuid::Uuid,
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
    pub execution_id: Option<uuid::Uuid>,
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
    pub execution_id: uuid::Uuid,
    /// Its final status (`COMPLETED`).
    pub status: String,
    /// The outputs of its steps, by step id.
    pub outputs: serde_json::Value,
    /// What it spent (exact).
    pub cost_usd: rust_decimal::Decimal,
}
