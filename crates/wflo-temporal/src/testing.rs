//! Probes for this crate's own integration suite and benches (feature `testing`): a workflow
//! whose activities count their attempts, fail a given number of times, fail for good, or wait
//! on a durable timer — so retries, non-retryable failures and worker restarts can be asserted.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use probe::{ProbeActivities, ProbeInput, ProbeWorkflow};

/// Attempt counters shared by the probe activities of one worker (or several, when cloned).
#[derive(Debug, Clone, Default)]
pub struct Probes {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Probes {
    /// New, empty counters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Attempts of step `name` of workflow `workflow_id` so far.
    pub fn attempts(&self, workflow_id: &str, name: &str) -> u32 {
        self.counts
            .lock()
            .expect("probe counters")
            .get(&format!("{workflow_id}/{name}"))
            .copied()
            .unwrap_or(0)
    }
    /// Waits until step `name` of `workflow_id` has run at least `n` times; false after `within`.
    pub async fn wait_for(&self, workflow_id: &str, name: &str, n: u32, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.attempts(workflow_id, name) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
    pub(crate) fn bump(&self, key: String) -> u32 {
        let mut m = self.counts.lock().expect("probe counters");
        let c = m.entry(key).or_insert(0);
        *c += 1;
        *c
    }
}

/// One step of a probe workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProbeStep {
    /// An activity that counts its attempts and succeeds.
    Count(String),
    /// An activity that fails (retryably) `failures` times, then succeeds.
    Flaky {
        /// Step name.
        name: String,
        /// Failures before the success.
        failures: u32,
    },
    /// An activity that fails with a non-retryable error.
    Fail(String),
    /// A durable timer.
    Sleep(Duration),
}

mod probe {
    #![allow(unreachable_pub)]
    use super::{ProbeStep, Probes};
    use crate::activities::{non_retryable, retryable};
    use crate::types::ActivityPolicy;
    use crate::workflows::activity_options;
    use serde::{Deserialize, Serialize};
    use std::sync::Arc;
    use std::time::Duration;
    use temporalio_macros::{activities, workflow, workflow_methods};
    use temporalio_sdk::activities::{ActivityContext, ActivityError};
    use temporalio_sdk::{TimerResult, WorkflowContext, WorkflowResult, WorkflowTermination};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ProbeInput {
        pub(crate) steps: Vec<ProbeStep>,
        pub(crate) policy: ActivityPolicy,
    }

    /// The activities behind [`ProbeStep`].
    pub struct ProbeActivities {
        probes: Probes,
    }

    impl ProbeActivities {
        pub(crate) fn new(probes: Probes) -> Self {
            ProbeActivities { probes }
        }
    }

    fn key(ctx: &ActivityContext, name: &str) -> String {
        format!(
            "{}/{name}",
            ctx.info().workflow_id.clone().unwrap_or_default()
        )
    }

    #[activities]
    impl ProbeActivities {
        #[activity]
        pub async fn probe(
            self: Arc<Self>,
            ctx: ActivityContext,
            step: ProbeStep,
        ) -> Result<String, ActivityError> {
            match step {
                ProbeStep::Count(name) => {
                    self.probes.bump(key(&ctx, &name));
                    Ok(name)
                }
                ProbeStep::Flaky { name, failures } => {
                    let n = self.probes.bump(key(&ctx, &name));
                    if n <= failures {
                        Err(retryable(format!(
                            "{name}: transient failure {n} of {failures}"
                        )))
                    } else {
                        Ok(name)
                    }
                }
                ProbeStep::Fail(name) => {
                    self.probes.bump(key(&ctx, &name));
                    Err(non_retryable(format!("{name}: permanent failure")))
                }
                ProbeStep::Sleep(_) => Err(non_retryable("sleep is not an activity")),
            }
        }
    }

    /// Runs its steps in order; returns the names of the activity steps that completed.
    #[workflow]
    #[derive(Default)]
    pub struct ProbeWorkflow;

    #[workflow_methods]
    impl ProbeWorkflow {
        #[run]
        pub async fn run(
            ctx: &mut WorkflowContext<Self>,
            input: ProbeInput,
        ) -> WorkflowResult<Vec<String>> {
            let mut done = Vec::new();
            for step in input.steps {
                if let ProbeStep::Sleep(d) = step {
                    if matches!(ctx.timer(d).await, TimerResult::Cancelled) {
                        return Err(WorkflowTermination::cancelled());
                    }
                    continue;
                }
                let name = ctx
                    .execute_activity(
                        ProbeActivities::probe,
                        step,
                        activity_options(&input.policy, Duration::ZERO),
                    )
                    .await?;
                done.push(name);
            }
            Ok(done)
        }
    }
}
