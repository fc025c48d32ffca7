//! Code steps: a program run in the sandbox, its result event written with the step's update.

use crate::context::Ctx;
use crate::definition::RetryPolicy;
use crate::{Error, Result, events};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use wflo_types::{CodeOutput, StepKind, StepOutput};

/// A code run in the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeCall {
    /// `python` or `bash`.
    pub language: String,
    /// The program.
    pub code: String,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Allow network access (bridge); off by default.
    pub network: bool,
}

impl CodeCall {
    /// Python code.
    pub fn python(code: impl Into<String>) -> Self {
        CodeCall {
            language: "python".into(),
            code: code.into(),
            timeout: None,
            network: false,
        }
    }
}

impl Ctx {
    /// Runs code in the sandbox; a non-zero exit, a timeout or an OOM kill fails the step
    /// (stdout and stderr are kept apart in the output and the error).
    pub async fn code(&self, key: &str, call: CodeCall) -> Result<Value> {
        self.code_with(key, call, RetryPolicy::default(), None)
            .await
    }

    pub(crate) async fn code_with(
        &self,
        key: &str,
        call: CodeCall,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let inputs = json!({"language": call.language, "code": call.code, "network": call.network});
        let this = self.clone();
        let key_s = key.to_string();
        self.memo(key, StepKind::Code, inputs, retry, timeout, move |_step| {
            let this = this.clone();
            let call = call.clone();
            let key = key_s.clone();
            async move {
                let sandbox = this.engine.sandbox().await?;
                let mut req =
                    wflo_sandbox::ExecRequest::builder(call.code.clone()).language(&call.language);
                if let Some(t) = call.timeout {
                    req = req.timeout(t);
                }
                if call.network {
                    req = req.network(wflo_sandbox::NetworkPolicy::Bridge);
                }
                let result = sandbox.execute(req.build()?).await?;
                // Written with the step's COMPLETED or FAILED update, in its transaction.
                this.emit_with_step(
                    &key,
                    events::outbox(events::sandbox(&result), this.execution, &this.labels),
                );
                let out = CodeOutput {
                    stdout: result.stdout.clone(),
                    stderr: result.stderr.clone(),
                    exit_code: result.exit_code,
                    status: result.status.as_str().to_string(),
                    timed_out: result.timed_out,
                    oom_killed: result.oom_killed,
                    duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
                    stdout_truncated: result.stdout_truncated,
                };
                if !result.success() {
                    let tail: String = result
                        .stderr
                        .chars()
                        .rev()
                        .take(500)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    return Err(Error::StepFailed {
                        step: key,
                        attempts: 1,
                        message: format!(
                            "code {} (exit {}{}{}): {}",
                            result.status.as_str(),
                            result.exit_code,
                            if result.timed_out { ", timed out" } else { "" },
                            if result.oom_killed {
                                ", out of memory"
                            } else {
                                ""
                            },
                            tail.trim()
                        ),
                    });
                }
                Ok(StepOutput::Code(out).to_value())
            }
        })
        .await
    }
}
