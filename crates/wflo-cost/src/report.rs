//! Cost reports: sums over the ledger, selected by a [`CostQuery`].

use crate::Result;
use crate::tracker::CostTracker;
use chrono::{DateTime, Duration, NaiveDate, Utc};
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

    /// Totals per UTC day from the day containing `since` (the last 30 days when none) to the
    /// day containing `until`, days without calls left out; the first day starts at `since`.
    pub async fn totals_by_day(
        &self,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(NaiveDate, CostSummary)>> {
        let from = since.unwrap_or(until - Duration::days(29));
        let mut rows = Vec::new();
        for (day, start, end) in day_windows(from, until) {
            let s = self
                .totals(&CostQuery {
                    since: Some(start),
                    until: Some(end),
                    ..CostQuery::default()
                })
                .await?;
            if s.calls > 0 {
                rows.push((day, s));
            }
        }
        Ok(rows)
    }
}

/// The UTC days from the one containing `since` to the one containing `until`, as
/// `[start, end)` windows.
fn day_windows(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(NaiveDate, DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut day = since.date_naive();
    let last = until.date_naive();
    while day <= last {
        let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        let end = start + Duration::days(1);
        out.push((day, start.max(since), end));
        day = day.succ_opt().expect("a next day");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_cover_the_range_without_gaps() {
        let since: DateTime<Utc> = "2026-11-23T15:00:00Z".parse().unwrap();
        let until: DateTime<Utc> = "2026-11-25T08:00:00Z".parse().unwrap();
        let w = day_windows(since, until);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].1, since, "the first window starts at since");
        assert_eq!(w[0].2, w[1].1, "windows touch");
        assert_eq!(w[2].0.to_string(), "2026-11-25");
        assert!(w[2].2 > until);
    }
}
