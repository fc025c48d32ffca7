//! Activities: the side effects of the workflows (greeting, sandboxed code). Thin: the work is
//! done by the crates that own it (wflo-sandbox).
#![allow(unreachable_pub)]

use crate::types::{CodeExecutionOutput, CodeExecutionRequest};
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tokio::sync::OnceCell;
use wflo_sandbox::{SandboxConfig, SandboxRuntime};

/// Marks an error as not worth retrying (bad input, misconfiguration).
pub(crate) fn non_retryable(message: impl Into<String>) -> ActivityError {
    ActivityError::application(ApplicationFailure::non_retryable(std::io::Error::other(
        message.into(),
    )))
}

/// A failure the retry policy may try again (infrastructure).
pub(crate) fn retryable(message: impl Into<String>) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(std::io::Error::other(
        message.into(),
    )))
}

/// The activities every wflo worker registers.
#[derive(Clone)]
pub struct WfloActivities {
    shared: Arc<Shared>,
}

struct Shared {
    sandbox_config: Option<SandboxConfig>,
    sandbox: OnceCell<Arc<SandboxRuntime>>,
}

impl WfloActivities {
    pub(crate) fn new(sandbox_config: Option<SandboxConfig>) -> Self {
        WfloActivities {
            shared: Arc::new(Shared {
                sandbox_config,
                sandbox: OnceCell::new(),
            }),
        }
    }

    async fn sandbox(&self) -> Result<Arc<SandboxRuntime>, ActivityError> {
        let Some(config) = self.shared.sandbox_config.clone() else {
            return Err(non_retryable(
                "this worker has no sandbox: give the worker a SandboxConfig (WorkerBuilder::sandbox) to run code",
            ));
        };
        self.shared
            .sandbox
            .get_or_try_init(|| async move { SandboxRuntime::new(config).await.map(Arc::new) })
            .await
            .cloned()
            .map_err(|e| sandbox_error(&e))
    }

    /// Shuts the sandbox down (its containers are removed).
    pub(crate) async fn shutdown(&self) {
        if let Some(rt) = self.shared.sandbox.get() {
            rt.shutdown().await;
        }
    }
}

/// Bad requests and a missing image are not retried; an engine hiccup is.
fn sandbox_error(e: &wflo_sandbox::Error) -> ActivityError {
    use wflo_sandbox::Error as S;
    match e {
        S::DaemonUnreachable { .. } | S::Docker { .. } | S::ShutDown => retryable(e.to_string()),
        _ => non_retryable(e.to_string()),
    }
}

#[activities]
impl WfloActivities {
    /// The seed's greeting.
    #[activity]
    pub async fn greet(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
        Ok(format!("Hello, {name}! Workflow executed successfully."))
    }

    /// Runs a program in the sandbox. Heartbeats while it runs, so a cancelled workflow stops
    /// the container (the execution future is dropped, which removes it).
    #[activity]
    pub async fn run_code(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: CodeExecutionRequest,
    ) -> Result<CodeExecutionOutput, ActivityError> {
        let exec = request
            .to_exec_request()
            .map_err(|e| non_retryable(e.to_string()))?;
        let sandbox = self.sandbox().await?;
        let run = sandbox.execute(exec);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => {
                    return match result {
                        Ok(r) => Ok(r.into()),
                        Err(wflo_sandbox::Error::TimedOut(r)) => Ok((*r).into()),
                        Err(e) => Err(sandbox_error(&e)),
                    };
                }
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    // Heartbeats carry cancellation to the activity.
                    let _ = ctx.record_heartbeat(()).await;
                }
            }
        }
    }

    /// Does nothing (benchmarks measure the engine, not the work).
    #[activity]
    pub async fn noop(_ctx: ActivityContext, step: u32) -> Result<u32, ActivityError> {
        Ok(step)
    }
}
