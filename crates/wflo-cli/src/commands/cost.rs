//! `wflo cost report [--by model|workflow|day] [--since DATE]`.

use crate::GroupBy;
use crate::format::{Table, usd};
use chrono::{DateTime, NaiveDate, Utc};
use wflo_core::cost::{CostQuery, CostSummary};

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
pub(crate) fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

pub(crate) async fn report(by: GroupBy, since: Option<DateTime<Utc>>) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let costs = wflo.engine().costs();
    let query = CostQuery {
        since,
        ..CostQuery::default()
    };
    let (label, rows): (&str, Vec<(String, CostSummary)>) = match by {
        GroupBy::Model => (
            "model",
            costs.totals_by_model(&query).await?.into_iter().collect(),
        ),
        GroupBy::Workflow => (
            "workflow",
            costs
                .totals_by_workflow(&query)
                .await?
                .into_iter()
                .collect(),
        ),
        GroupBy::Day => (
            "day (UTC)",
            costs
                .totals_by_day(since, Utc::now())
                .await?
                .into_iter()
                .map(|(day, s)| (day.to_string(), s))
                .collect(),
        ),
    };
    let scope = match since {
        Some(s) => format!(" since {}", s.format("%Y-%m-%d %H:%M:%S UTC")),
        None if by == GroupBy::Day => " over the last 30 days".into(),
        None => String::new(),
    };
    if rows.is_empty() {
        println!("no LLM calls recorded{scope}");
        return Ok(0);
    }
    let mut t = Table::new(&[
        label,
        ">calls",
        ">prompt",
        ">completion",
        ">cached",
        ">cost USD",
    ]);
    let mut total = CostSummary::default();
    for (k, s) in &rows {
        t.row(vec![
            k.clone(),
            s.calls.to_string(),
            s.prompt_tokens.to_string(),
            s.completion_tokens.to_string(),
            s.cached_prompt_tokens.to_string(),
            usd(s.cost_usd),
        ]);
        total.calls += s.calls;
        total.prompt_tokens += s.prompt_tokens;
        total.completion_tokens += s.completion_tokens;
        total.cached_prompt_tokens += s.cached_prompt_tokens;
        total.cost_usd += s.cost_usd;
    }
    t.row(vec![
        "total".into(),
        total.calls.to_string(),
        total.prompt_tokens.to_string(),
        total.completion_tokens.to_string(),
        total.cached_prompt_tokens.to_string(),
        usd(total.cost_usd),
    ]);
    println!("LLM costs by {label}{scope}");
    print!("{}", t.render());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_times() {
        assert_eq!(
            parse_since("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-11-01T12:30:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T10:30:00+00:00"
        );
        assert!(parse_since("yesterday").is_err());
    }
}
