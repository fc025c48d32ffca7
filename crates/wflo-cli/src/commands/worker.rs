//! `wflo worker`: a Temporal worker that runs `WfloWorkflow` (and the other Wflo workflows)
//! with this configuration's database, provider, sandbox and budgets.

use crate::exit::{self, coded};
use wflo_core::temporal::TemporalWorker;

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn worker() -> anyhow::Result<u8> {
    let config = super::config()?;
    let Some(temporal) = config.temporal_config()? else {
        return Err(coded(
            exit::USAGE,
            "the worker needs a Temporal server: set TEMPORAL_ADDRESS (e.g. http://127.0.0.1:7233; \
             `cargo xtask services up temporal` starts a dev server)",
        ));
    };
    let sandbox = config.sandbox()?;
    let wflo = super::connect(config).await?;
    eprintln!(
        "worker polling task queue `{}` of namespace `{}` at {}; stop with Ctrl-C or SIGTERM",
        temporal.task_queue(),
        temporal.namespace(),
        temporal.address()
    );
    TemporalWorker::builder(temporal)
        .engine(wflo.engine().clone())
        .sandbox(sandbox)
        .run_until(shutdown_signal())
        .await?;
    wflo.shutdown().await;
    eprintln!("worker stopped");
    Ok(0)
}
