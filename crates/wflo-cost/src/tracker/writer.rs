//! The group-commit writer: budget operations waiting at one moment are applied in one
//! transaction, each answered after the commit that holds it; contention aborts are retried.

use crate::config::CostConfig;
use crate::{Error, Result};
use backon::{ExponentialBuilder, Retryable};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wflo_db::{Db, Executor};

/// One budget operation waiting for the writer.
pub(super) struct Job {
    pub(super) op: wflo_db::BudgetOp<'static>,
    pub(super) reply: oneshot::Sender<wflo_db::Result<wflo_db::BudgetOpOutcome>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("op", &self.op).finish()
    }
}

/// Runs `op` again while it fails with a transient database error (see [`is_transient`]).
pub(super) async fn retry_transient<T, F, Fut>(times: usize, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    op.retry(
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .with_max_times(times)
            .with_jitter(),
    )
    .when(is_transient)
    .await
}

/// A writer: takes the operations waiting (up to `max_batch`), applies them in one
/// transaction, answers each. Ends when every tracker holding the sender is gone.
pub(super) async fn write_loop(
    db: Db,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    config: Arc<CostConfig>,
) {
    loop {
        let mut jobs = Vec::with_capacity(config.max_batch);
        if rx.lock().await.recv_many(&mut jobs, config.max_batch).await == 0 {
            return;
        }
        let (ops, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.op, j.reply)).unzip();
        let batch = retry_transient(config.busy_retries, || async {
            Ok(db.budgets().apply(&ops).await?)
        })
        .await;
        match batch {
            Ok(outcomes) => {
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    let _ = reply.send(outcome);
                }
            }
            Err(_) => {
                // The transaction failed as a whole: apply each operation alone, so one
                // operation's failure is only its own.
                for (op, reply) in ops.iter().zip(replies) {
                    let one = retry_transient(config.busy_retries, || async {
                        Ok(db.budgets().apply(std::slice::from_ref(op)).await?)
                    })
                    .await;
                    let outcome = match one {
                        Ok(mut v) => v.pop().unwrap_or_else(|| {
                            Err(wflo_db::Error::Invalid {
                                entity: "budget reservation",
                                detail: "the ledger returned no outcome; report this bug".into(),
                            })
                        }),
                        Err(Error::Db(e)) => Err(e),
                        Err(other) => Err(wflo_db::Error::Invalid {
                            entity: "budget reservation",
                            detail: other.to_string(),
                        }),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// Whether retrying may succeed: the database rolled the operation's transaction back under
/// contention ([`wflo_db::Error::is_retryable`]), so a retry is safe.
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Db(db) if db.is_retryable())
}

pub(super) fn writer_stopped() -> Error {
    Error::InvalidConfig {
        what: "budget writer",
        detail: "it stopped before answering (its runtime shut down); the operation may have \
                 been applied: reserve again with the same request id, or check the reservation"
            .into(),
    }
}

pub(super) fn wrong_outcome() -> Error {
    Error::InvalidConfig {
        what: "budget writer",
        detail: "the ledger answered with another operation's outcome; report this bug".into(),
    }
}
