//! Cost reports: sums over the ledger, selected by a [`CostQuery`].

use crate::Result;
use crate::tracker::CostTracker;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use wflo_db::Executor;
use wflo_types::ExecutionId;

/// Sums over ledger rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostSummary {
    /// Calls.
    pub calls: u64,
    /// Total cost, exact.
    pub cost_usd: Decimal,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_prompt_tokens: u64,
    /// Cache-write tokens.
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
}

impl From<wflo_db::CostTotals> for CostSummary {
    fn from(t: wflo_db::CostTotals) -> Self {
        CostSummary {
            calls: t.calls,
            cost_usd: t.cost_usd,
            prompt_tokens: t.tokens.prompt,
            completion_tokens: t.tokens.completion,
            cached_prompt_tokens: t.tokens.cached_prompt,
            cache_write_tokens: t.tokens.cache_write,
            reasoning_tokens: t.tokens.reasoning,
        }
    }
}

/// Which calls an aggregate covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostQuery {
    /// Only this execution.
    pub execution_id: Option<ExecutionId>,
    /// Only this workflow definition.
    pub workflow: Option<String>,
    /// Only this model (catalogue id).
    pub model: Option<String>,
    /// From (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Until (exclusive).
    pub until: Option<DateTime<Utc>>,
}

impl CostQuery {
    fn filter(&self) -> wflo_db::CostFilter {
        wflo_db::CostFilter {
            execution_id: self.execution_id,
            workflow_name: self.workflow.clone(),
            model: self.model.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

impl CostTracker {
    /// Totals over the calls `query` selects.
    pub async fn totals(&self, query: &CostQuery) -> Result<CostSummary> {
        Ok(self.db.costs().totals(&query.filter()).await?.into())
    }

    /// Totals per model.
    pub async fn totals_by_model(
        &self,
        query: &CostQuery,
    ) -> Result<BTreeMap<String, CostSummary>> {
        Ok(self
            .db
            .costs()
            .totals_by_model(&query.filter())
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect())
    }

    /// Totals per workflow definition name.
    pub async fn totals_by_workflow(
        &self,
        query: &CostQuery,
    ) -> Result<BTreeMap<String, CostSummary>> {
        Ok(self
            .db
            .costs()
            .totals_by_workflow(&query.filter())
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect())
    }
}
