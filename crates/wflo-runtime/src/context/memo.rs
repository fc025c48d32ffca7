//! `memo`: one durable step. A completed step returns its stored output without running again;
//! otherwise each attempt is RUNNING then COMPLETED or FAILED, with its event, retried by the
//! step's policy.

use super::Ctx;
use crate::definition::RetryPolicy;
use crate::{Error, Result};
use serde_json::Value;
use std::time::Duration;
use tracing::Instrument;
use wflo_db::{Executor, StepStatus};
use wflo_types::StepKind;

impl Ctx {
    /// Runs one durable step: a completed step returns its stored output without running
    /// again; otherwise each attempt is RUNNING then COMPLETED or FAILED, with its event.
    ///
    /// The run loads its execution's steps once when it starts; a key it does not know is
    /// inserted directly (RUNNING, with its event, in one statement on PostgreSQL), and a key
    /// recorded meanwhile by someone else is read back and treated as known.
    ///
    /// Runs inside a `wflo.step` span (step, kind; attempt and memoized recorded as they are
    /// known), and logs each attempt's end at info (failures at warn).
    pub(crate) async fn memo<F, Fut>(
        &self,
        key: &str,
        kind: StepKind,
        inputs: Value,
        retry: RetryPolicy,
        timeout: Option<Duration>,
        mut body: F,
    ) -> Result<Value>
    where
        F: FnMut(wflo_db::Step) -> Fut,
        Fut: std::future::Future<Output = Result<Value>>,
    {
        let span = tracing::info_span!(
            "wflo.step",
            step = key,
            kind = kind.as_str(),
            attempt = tracing::field::Empty,
            memoized = tracing::field::Empty,
        );
        async move {
            let db = &self.engine.inner.db;
            self.check_lease()?;
            let mut step = self.known_step(key);
            let mut reread = false;
            let mut attempt = 0u32;
            loop {
                if let Some(s) = step.as_ref().filter(|s| s.status == StepStatus::Completed) {
                    let out = s.outputs.clone().unwrap_or(Value::Null);
                    tracing::Span::current().record("memoized", true);
                    tracing::debug!("step already completed; its stored output is used");
                    self.remember_output(key, &out);
                    if let Some(o) = &self.observer {
                        o.step_reused(key);
                    }
                    return Ok(out);
                }
                let running = match step.take() {
                    Some(s) => match self
                        .set_step_status(&s, StepStatus::Running, None, None)
                        .await
                    {
                        Ok(r) => r,
                        // The row moved on since this run loaded it (another process completed
                        // it, say): read it again, once, and decide on what it is now.
                        Err(Error::Db(wflo_db::Error::InvalidTransition { .. })) if !reread => {
                            reread = true;
                            step = db.steps().find_by_key(self.execution, key).await?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                    // A new step starts RUNNING with its event, committed before the body runs.
                    None => match self.start_step(key, kind.as_str(), &inputs).await? {
                        Some(s) => s,
                        None => {
                            reread = true;
                            step = db.steps().find_by_key(self.execution, key).await?;
                            if step.is_none() {
                                return Err(Error::InvalidState(format!(
                                    "step `{key}` was recorded and then removed while starting"
                                )));
                            }
                            continue;
                        }
                    },
                };
                attempt += 1;
                let step_now = running;
                tracing::Span::current()
                    .record("attempt", step_now.attempt)
                    .record("memoized", false);
                // An earlier attempt's events whose update was never written are not this one's.
                self.take_pending(key);
                if let Some(o) = &self.observer {
                    o.step_started(key, kind, step_now.attempt);
                }
                let fut = body(step_now.clone());
                let result = match timeout {
                    Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                        Err(Error::Timeout {
                            what: format!("step `{key}`"),
                            after: t,
                        })
                    }),
                    None => fut.await,
                };
                match result {
                    Ok(out) => {
                        let done = self
                            .set_step_status(&step_now, StepStatus::Completed, Some(out.clone()), None)
                            .await?;
                        self.remember_output(key, &out);
                        tracing::info!(cost_usd = %done.cost_usd, "step completed");
                        if let Some(o) = &self.observer {
                            o.step_finished(key, StepStatus::Completed, done.cost_usd);
                            // The execution's total changes only with a step that cost something.
                            if !done.cost_usd.is_zero()
                                && let Ok(e) = db.executions().get(self.execution).await
                            {
                                o.spend(e.cost_usd, self.budget);
                            }
                        }
                        return Ok(out);
                    }
                    Err(e) => {
                        let failed = self
                            .set_step_status(&step_now, StepStatus::Failed, None, Some(e.to_string()))
                            .await?;
                        tracing::warn!(error = %e, retryable = e.is_retryable(), "step attempt failed");
                        if let Some(o) = &self.observer {
                            o.step_finished(key, StepStatus::Failed, failed.cost_usd);
                        }
                        step = Some(failed);
                        if !e.is_retryable() {
                            return Err(e);
                        }
                        if attempt >= retry.max_attempts {
                            return Err(match e {
                                Error::Timeout { .. } if retry.max_attempts == 1 => e,
                                // Not the step's failure but its surroundings': left for an outer
                                // layer (a Temporal activity) to retry.
                                Error::Db(_) => e,
                                Error::Sandbox(ref s) if s.is_retryable() => e,
                                other => Error::StepFailed {
                                    step: key.to_string(),
                                    attempts: attempt,
                                    message: other.to_string(),
                                },
                            });
                        }
                        let wait = retry.backoff * 2u32.saturating_pow(attempt - 1);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Keeps a step's output for the templates of the steps after it.
    fn remember_output(&self, key: &str, out: &Value) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .outputs
            .insert(key.to_string(), out.clone());
    }
}
