//! Checkpoint steps: the run's state saved as the next snapshot.

use crate::context::Ctx;
use crate::definition::RetryPolicy;
use crate::{Error, Result};
use serde_json::json;
use wflo_db::Executor;
use wflo_types::{CheckpointOutput, StepKind, StepOutput};

impl Ctx {
    /// Saves the execution's state (completed outputs and variables) as the next snapshot;
    /// returns its version.
    pub async fn checkpoint(&self, key: &str) -> Result<i32> {
        let this = self.clone();
        let out = self
            .memo(
                key,
                StepKind::Checkpoint,
                json!({}),
                RetryPolicy::default(),
                None,
                move |_| {
                    let this = this.clone();
                    let key = key.to_string();
                    async move {
                        let state = {
                            let st = this
                                .state
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            json!({"outputs": st.outputs, "vars": st.vars, "inputs": st.inputs})
                        };
                        let snap = this
                            .engine
                            .inner
                            .db
                            .snapshots()
                            .create(this.execution, Some(&key), state)
                            .await?;
                        Ok(StepOutput::Checkpoint(CheckpointOutput {
                            snapshot_version: snap.version,
                            snapshot_id: Some(snap.id),
                        })
                        .to_value())
                    }
                },
            )
            .await?;
        match StepOutput::read(StepKind::Checkpoint, &out) {
            Ok(StepOutput::Checkpoint(c)) => Ok(c.snapshot_version),
            Ok(_) => Err(Error::InvalidState(format!(
                "step `{key}` stored a checkpoint output of another kind"
            ))),
            Err(e) => Err(Error::InvalidState(format!("step `{key}`: {e}"))),
        }
    }
}
