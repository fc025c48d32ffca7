//! `wflo cost report [--by model|workflow|day] [--since DATE]`.

use crate::GroupBy;
use crate::format::{Table, usd};
use chrono::{DateTime, Duration, NaiveDate, Utc};
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

/// The UTC days from the one containing `since` to the one containing `until`, as
/// `[start, end)` windows.
pub(crate) fn day_windows(
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
        GroupBy::Day => {
            let now = Utc::now();
            let from = since.unwrap_or(now - Duration::days(29));
            let mut rows = Vec::new();
            for (day, start, end) in day_windows(from, now) {
                let s = costs
                    .totals(&CostQuery {
                        since: Some(start),
                        until: Some(end),
                        ..CostQuery::default()
                    })
                    .await?;
                if s.calls > 0 {
                    rows.push((day.to_string(), s));
                }
            }
            ("day (UTC)", rows)
        }
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

    #[test]
    fn days_cover_the_range_without_gaps() {
        let since = parse_since("2026-11-23T15:00:00Z").unwrap();
        let until = parse_since("2026-11-25T08:00:00Z").unwrap();
        let w = day_windows(since, until);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].1, since, "the first window starts at --since");
        assert_eq!(w[0].2, w[1].1, "windows touch");
        assert_eq!(w[2].0.to_string(), "2026-11-25");
        assert!(w[2].2 > until);
    }
}
