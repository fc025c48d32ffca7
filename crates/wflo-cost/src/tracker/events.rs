//! The events a settle writes in its own transaction: `cost.recorded` for the charge and
//! `cost.budget_alert` for each threshold it crossed.

use crate::budget::Scope;
use crate::usage::{CostBreakdown, TokenUsage};
use rust_decimal::Decimal;
use wflo_types::{ExecutionId, RunLabels};

/// Topic of cost events.
pub const COSTS_TOPIC: &str = wflo_types::topic::COSTS;
/// Event type of a budget threshold alert.
pub const BUDGET_ALERT_EVENT: &str = "cost.budget_alert";
/// The `source` of events this crate writes.
pub const EVENT_SOURCE: &str = "wflo-cost";

/// The outbox event of a crossed threshold (`cost.budget_alert`), keyed by the execution or,
/// for a budget of no execution, by its scope.
pub(super) fn alert_event(
    c: &wflo_db::ThresholdCrossed,
    execution: Option<ExecutionId>,
    labels: Option<&RunLabels>,
    usage: &TokenUsage,
    cost: &CostBreakdown,
) -> wflo_db::NewOutboxEvent {
    let b = &c.budget;
    let percentage = (b.spent_usd * Decimal::ONE_HUNDRED / b.limit_usd).normalize();
    let scope = b.key.scope.clone();
    let alert_type = match c.threshold_pct {
        50 => Some(wflo_types::AlertType::Threshold50),
        75 => Some(wflo_types::AlertType::Threshold75),
        90 => Some(wflo_types::AlertType::Threshold90),
        100 => Some(wflo_types::AlertType::Threshold100),
        _ => None,
    };
    let payload = wflo_types::EventPayload::BudgetAlert(wflo_types::CostPayload {
        model: Some(cost.model.clone()),
        prompt_tokens: usage.prompt,
        completion_tokens: usage.completion,
        cached_prompt_tokens: usage.cached_prompt,
        reasoning_tokens: usage.reasoning,
        cost_usd: cost.total_usd,
        total_cost_usd: b.spent_usd,
        budget_limit_usd: Some(b.limit_usd),
        percentage: Some(percentage),
        alert_type,
        scope: Some(scope.clone()),
    });
    let event = outbox_row(payload, execution, labels);
    match execution {
        Some(_) => event,
        None => event.keyed(scope),
    }
}

/// The `cost.recorded` event of a settled charge, built inside the settle's transaction: the
/// execution's total after the charge, and its budget's limit when it has one.
pub(super) fn cost_event(
    c: &wflo_db::ChargeRecorded<'_>,
    usage: &TokenUsage,
    labels: Option<&RunLabels>,
) -> wflo_db::NewOutboxEvent {
    let execution = c.entry.execution_id;
    let scope = execution.map(|e| Scope::Execution(e).key());
    let limit = scope.as_ref().and_then(|k| {
        c.budgets
            .iter()
            .find(|b| &b.key.scope == k && b.key.period.is_empty())
            .map(|b| b.limit_usd)
    });
    let total = c.execution_total_usd.unwrap_or(c.entry.cost_usd);
    let payload = wflo_types::EventPayload::CostRecorded(wflo_types::CostPayload {
        model: Some(c.entry.model.clone()),
        prompt_tokens: usage.prompt,
        completion_tokens: usage.completion,
        cached_prompt_tokens: usage.cached_prompt,
        reasoning_tokens: usage.reasoning,
        cost_usd: c.entry.cost_usd,
        total_cost_usd: total,
        budget_limit_usd: limit,
        percentage: limit
            .filter(|l| !l.is_zero())
            .map(|l| (total * Decimal::ONE_HUNDRED / l).round_dp(2)),
        alert_type: None,
        scope,
    });
    outbox_row(payload, execution, labels)
}

/// The outbox row of `payload`, about `execution` (its partition key) and labelled with its
/// run's workflow, trace and correlation ids.
fn outbox_row(
    payload: wflo_types::EventPayload,
    execution: Option<ExecutionId>,
    labels: Option<&RunLabels>,
) -> wflo_db::NewOutboxEvent {
    let mut env = wflo_types::EventEnvelope::new(EVENT_SOURCE, payload);
    if let Some(e) = execution {
        env = env.with_execution(e);
    }
    if let Some(l) = labels {
        env = env.with_labels(l);
    }
    wflo_db::NewOutboxEvent::from_envelope(&env)
}
