//! The live display of a run, driven by the engine's `Observer` callbacks: a line per step, the
//! spend against the budget, approval waits. On a terminal it is an indicatif display on stderr;
//! otherwise (CI, pipes) plain lines on stderr.

use crate::format::{percent, usd};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;
use wflo_core::Observer;
use wflo_core::types::ApprovalId;
use wflo_core::types::{StepKind, StepStatus};

/// Follows one run.
#[derive(Debug)]
pub(crate) struct Progress {
    mode: Mode,
    budget: Option<Decimal>,
    last_spend: Mutex<Option<Decimal>>,
}

#[derive(Debug)]
enum Mode {
    Bars {
        multi: MultiProgress,
        steps: Mutex<HashMap<String, ProgressBar>>,
        spend: ProgressBar,
    },
    Plain,
}

/// Parts of the budget bar (per-million of the budget).
const BAR_LEN: u64 = 1_000_000;

impl Progress {
    /// A display for a run under `budget`: bars on a terminal, lines otherwise.
    pub(crate) fn new(budget: Option<Decimal>) -> Progress {
        let mode = if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let spend = match budget {
                Some(_) => {
                    let bar = ProgressBar::new(BAR_LEN);
                    bar.set_style(
                        ProgressStyle::with_template("  spend [{bar:30.cyan/blue}] {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar
                }
                None => {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("  spend {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar
                }
            };
            let spend = multi.add(spend);
            spend.set_message(spend_message(Decimal::ZERO, budget));
            Mode::Bars {
                multi,
                steps: Mutex::new(HashMap::new()),
                spend,
            }
        } else {
            Mode::Plain
        };
        Progress {
            mode,
            budget,
            last_spend: Mutex::new(None),
        }
    }

    /// A line above the display (or on stderr).
    pub(crate) fn println(&self, line: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Mode::Plain => plain(line),
        }
    }

    /// Ends the display (bars stay on screen as drawn last).
    pub(crate) fn finish(&self) {
        if let Mode::Bars { steps, spend, .. } = &self.mode {
            for bar in lock(steps).values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            spend.abandon();
        }
    }

    fn step_bar(&self, step: &str) -> Option<ProgressBar> {
        let Mode::Bars {
            multi,
            steps,
            spend,
        } = &self.mode
        else {
            return None;
        };
        let mut steps = lock(steps);
        let bar = steps.entry(step.to_string()).or_insert_with(|| {
            let bar = multi.insert_before(spend, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.green} {prefix:<14} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(step.to_string());
            bar
        });
        Some(bar.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn plain(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

fn spend_message(total: Decimal, budget: Option<Decimal>) -> String {
    match budget {
        Some(b) => format!(
            "{} of {} USD ({})",
            usd(total),
            usd(b),
            percent(total, Some(b))
        ),
        None => format!("{} USD (no budget)", usd(total)),
    }
}

/// Position of the budget bar for `total` of `budget`.
fn bar_position(total: Decimal, budget: Decimal) -> u64 {
    if budget <= Decimal::ZERO {
        return BAR_LEN;
    }
    (total.max(Decimal::ZERO) * Decimal::from(BAR_LEN) / budget)
        .round()
        .to_u64()
        .unwrap_or(BAR_LEN)
        .min(BAR_LEN)
}

impl Observer for Progress {
    fn step_started(&self, step: &str, kind: StepKind, attempt: i32) {
        let kind = kind.as_str();
        match self.step_bar(step) {
            Some(bar) => {
                bar.set_message(if attempt > 1 {
                    format!("{kind:<10} running (attempt {attempt})")
                } else {
                    format!("{kind:<10} running")
                });
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            None => plain(&format!("step {step} ({kind}) started, attempt {attempt}")),
        }
    }

    fn step_finished(&self, step: &str, status: StepStatus, cost_usd: Decimal) {
        let cost = if cost_usd.is_zero() {
            String::new()
        } else {
            format!(" {} USD", usd(cost_usd))
        };
        match self.step_bar(step) {
            Some(bar) => {
                let mark = if status == StepStatus::Completed {
                    "✔"
                } else {
                    "✘"
                };
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<16} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(format!("{mark} {step}"));
                bar.finish_with_message(format!("{status}{cost}"));
            }
            None => plain(&format!("step {step} {status}{cost}")),
        }
    }

    fn step_reused(&self, step: &str) {
        match self.step_bar(step) {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<16} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(format!("↺ {step}"));
                bar.finish_with_message("COMPLETED earlier (stored output reused)");
            }
            None => plain(&format!(
                "step {step} COMPLETED earlier (stored output reused)"
            )),
        }
    }

    fn waiting_for_approval(&self, approval: ApprovalId, message: &str) {
        let line = format!(
            "waiting for approval {approval}: {message}\n  decide with `wflo approvals approve {approval}` or `wflo approvals reject {approval} --reason ...`"
        );
        self.println(&line);
    }

    fn spend(&self, total_usd: Decimal, budget_usd: Option<Decimal>) {
        let budget = budget_usd.or(self.budget);
        if lock(&self.last_spend).replace(total_usd) == Some(total_usd) {
            return;
        }
        match &self.mode {
            Mode::Bars { spend, .. } => {
                if let Some(b) = budget {
                    spend.set_position(bar_position(total_usd, b));
                }
                spend.set_message(spend_message(total_usd, budget));
            }
            Mode::Plain => plain(&format!("spend {}", spend_message(total_usd, budget))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn the_budget_bar_is_proportional_and_capped() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(bar_position(d("0"), d("0.05")), 0);
        assert_eq!(bar_position(d("0.025"), d("0.05")), BAR_LEN / 2);
        assert_eq!(bar_position(d("0.000123"), d("0.05")), 2460);
        assert_eq!(bar_position(d("1"), d("0.05")), BAR_LEN);
    }

    #[test]
    fn spend_lines_say_how_much_of_the_budget() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(
            spend_message(d("0.01"), Some(d("0.05"))),
            "0.01 of 0.05 USD (20%)"
        );
        assert_eq!(spend_message(d("0.01"), None), "0.01 USD (no budget)");
    }
}
