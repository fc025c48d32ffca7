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
    let wflo = super::connect(config).await?;
    eprintln!(
        "worker polling task queue `{}` of namespace `{}` at {}; stop with Ctrl-C or SIGTERM",
        temporal.task_queue(),
        temporal.namespace(),
        temporal.address()
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // The worker runs on a thread of its own; when it ends by itself (the SDK's processing
    // thread can panic on an unexpected history and take the worker down), it is started
    // again: the runs it held continue from their history.
    loop {
        let mut handle = TemporalWorker::builder(temporal.clone())
            .engine(wflo.engine().clone())
            .spawn()
            .await?;
        tokio::select! {
            () = &mut shutdown => {
                handle.shutdown().await?;
                break;
            }
            r = handle.ended() => {
                let why = match r {
                    Ok(()) => "it stopped".to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("the temporal worker ended unexpectedly ({why}); starting it again in 1 s");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
    wflo.shutdown().await;
    eprintln!("worker stopped");
    Ok(0)
}
