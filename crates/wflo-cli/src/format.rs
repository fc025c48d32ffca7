//! Plain-text output: money, tables, times.

use rust_decimal::Decimal;
use wflo_core::types::StepOutput;

/// `0.000123` — dollars with at most 9 decimals (the ledger's nano-USD), trailing zeros cut,
/// at least 2 decimals.
pub(crate) fn usd(d: Decimal) -> String {
    let mut d = d.round_dp(9).normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d.to_string()
}

/// `12.5%` of `limit` spent, or empty without a limit.
pub(crate) fn percent(spent: Decimal, limit: Option<Decimal>) -> String {
    match limit {
        Some(l) if !l.is_zero() => {
            let p = (spent * Decimal::from(100) / l).round_dp(2).normalize();
            format!("{p}%")
        }
        _ => String::new(),
    }
}

/// The cost cell of a step: its cost, or `0.00 cached (saved X)` when the LLM response cache
/// answered it (the step's output then records `cached: true` and `saved_usd`).
pub(crate) fn step_cost(cost: Decimal, output: Option<&StepOutput>) -> String {
    match output {
        Some(StepOutput::Llm(o)) if o.cached => match o.saved_usd {
            Some(s) => format!("{} cached (saved {})", usd(cost), usd(s)),
            None => format!("{} cached", usd(cost)),
        },
        _ => usd(cost),
    }
}

/// A UTC time without fractions.
pub(crate) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, `-` when absent.
pub(crate) fn maybe_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// At most `n` characters on one line, with `…` when cut.
pub(crate) fn short(text: &str, n: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let cut: String = one_line.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// A left-aligned table with a header row; columns are as wide as their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is right-aligned.
    pub(crate) fn new(headers: &[&str]) -> Table {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            rows: vec![
                headers
                    .iter()
                    .map(|h| h.trim_start_matches('>').to_string())
                    .collect(),
            ],
        }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the header is there.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.len() == 1
    }

    /// The table as text.
    pub(crate) fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, w) in widths.iter().enumerate() {
                let cell = row.get(c).map(String::as_str).unwrap_or("");
                let pad = w - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                if self.right.get(c).copied().unwrap_or(false) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use wflo_core::types::StepKind;

    #[test]
    fn money_is_exact_and_readable() {
        assert_eq!(usd(Decimal::from_str("0.000123000").unwrap()), "0.000123");
        assert_eq!(usd(Decimal::from_str("0.05").unwrap()), "0.05");
        assert_eq!(usd(Decimal::ZERO), "0.00");
        assert_eq!(usd(Decimal::from(3)), "3.00");
        assert_eq!(usd(Decimal::from_str("0.0000000004").unwrap()), "0.00");
    }

    #[test]
    fn a_cached_step_says_so_and_what_it_saved() {
        let d = |s| Decimal::from_str(s).unwrap();
        let llm = |v: serde_json::Value| StepOutput::read(StepKind::Llm, &v).unwrap();
        assert_eq!(step_cost(d("0.000123"), None), "0.000123");
        let paid = llm(serde_json::json!({"text": "x", "cached": false}));
        assert_eq!(step_cost(d("0.000123"), Some(&paid)), "0.000123");
        let hit =
            llm(serde_json::json!({"cached": true, "cost_usd": "0", "saved_usd": "0.000321"}));
        assert_eq!(
            step_cost(Decimal::ZERO, Some(&hit)),
            "0.00 cached (saved 0.000321)"
        );
        let hit = llm(serde_json::json!({"cached": true, "saved_usd": 0.5}));
        assert_eq!(
            step_cost(Decimal::ZERO, Some(&hit)),
            "0.00 cached (saved 0.50)"
        );
        let hit = llm(serde_json::json!({"cached": true}));
        assert_eq!(step_cost(Decimal::ZERO, Some(&hit)), "0.00 cached");
    }

    #[test]
    fn percent_of_a_budget() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(percent(d("0.01"), Some(d("0.05"))), "20%");
        assert_eq!(percent(d("0.000123"), Some(d("0.05"))), "0.25%");
        assert_eq!(percent(d("1"), None), "");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["step", ">cost"]);
        t.row(vec!["plan".into(), "0.000123".into()]);
        t.row(vec!["a-longer-id".into(), "0.00".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "step             cost");
        assert_eq!(lines[1], "plan         0.000123");
        assert_eq!(lines[2], "a-longer-id      0.00");
    }

    #[test]
    fn short_cuts_long_text_to_one_line() {
        assert_eq!(short("a\nb", 10), "a b");
        assert_eq!(short("abcdefgh", 5), "abcd…");
    }
}
