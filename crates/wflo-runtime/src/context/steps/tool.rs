//! Tool steps: a registered tool called with rendered input.

use crate::context::Ctx;
use crate::definition::RetryPolicy;
use crate::{Error, Result};
use serde_json::{Value, json};
use std::time::Duration;
use wflo_types::StepKind;

impl Ctx {
    /// Calls a registered tool.
    pub async fn tool(&self, key: &str, name: &str, input: Value) -> Result<Value> {
        self.tool_with(key, name, input, RetryPolicy::default(), None)
            .await
    }

    pub(crate) async fn tool_with(
        &self,
        key: &str,
        name: &str,
        input: Value,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let tool = self.engine.inner.tools.get(name).cloned().ok_or_else(|| {
            Error::NotConfigured(format!(
                "step `{key}` calls tool `{name}`, which is not registered; registered tools: {}",
                {
                    let mut names: Vec<_> = self.engine.inner.tools.keys().cloned().collect();
                    names.sort();
                    names.join(", ")
                }
            ))
        })?;
        let name_s = name.to_string();
        self.memo(
            key,
            StepKind::Tool,
            json!({"tool": name, "input": input}),
            retry,
            timeout,
            move |_| {
                let tool = tool.clone();
                let input = input.clone();
                let name = name_s.clone();
                async move {
                    tool.call(input).await.map_err(|e| Error::Tool {
                        tool: name,
                        retryable: e.is_retryable(),
                        message: e.message().to_string(),
                    })
                }
            },
        )
        .await
    }
}
