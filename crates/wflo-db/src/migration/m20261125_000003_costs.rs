//! The cost ledger and budgets: one `cost_entries` row per priced LLM call; `budgets` with
//! integer nano-USD limit, spent and reserved amounts (every change one conditional, atomic
//! UPDATE); `budget_reservations` keyed by a unique request id; and `budget_alerts`, one marker
//! row per (budget, threshold) so each threshold alert is written exactly once.
//! `budgets.last_reservation_id` is the decision marker of the conditional reserve: the one
//! statement that takes room also names the reservation that took it, so a refusal returns
//! the exact amounts it was decided on.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000003_costs"
    }
}

const UP: &str = r#"
CREATE TABLE budgets (
    id {uuid} NOT NULL PRIMARY KEY,
    scope VARCHAR(255) NOT NULL CHECK (length(scope) > 0),
    period VARCHAR(32) NOT NULL DEFAULT '',
    limit_nano_usd BIGINT NOT NULL CHECK (limit_nano_usd > 0),
    spent_nano_usd BIGINT NOT NULL DEFAULT 0 CHECK (spent_nano_usd >= 0),
    reserved_nano_usd BIGINT NOT NULL DEFAULT 0 CHECK (reserved_nano_usd >= 0),
    last_reservation_id {uuid},
    created_at {ts} NOT NULL DEFAULT {now},
    updated_at {ts} NOT NULL DEFAULT {now},
    CONSTRAINT uq_budgets_scope_period UNIQUE (scope, period)
);

CREATE TABLE budget_reservations (
    id {uuid} NOT NULL PRIMARY KEY,
    request_id VARCHAR(255) NOT NULL CHECK (length(request_id) > 0),
    amount_nano_usd BIGINT NOT NULL CHECK (amount_nano_usd >= 0),
    actual_nano_usd BIGINT CHECK (actual_nano_usd >= 0),
    status VARCHAR(16) NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'SETTLED', 'RELEASED', 'EXPIRED')),
    execution_id {uuid},
    expires_at {ts} NOT NULL,
    created_at {ts} NOT NULL DEFAULT {now},
    closed_at {ts},
    CONSTRAINT uq_budget_reservations_request_id UNIQUE (request_id)
);
CREATE INDEX ix_budget_reservations_pending ON budget_reservations (expires_at)
    WHERE status = 'PENDING';

CREATE TABLE budget_reservation_scopes (
    reservation_id {uuid} NOT NULL REFERENCES budget_reservations (id) ON DELETE CASCADE,
    budget_id {uuid} NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    PRIMARY KEY (reservation_id, budget_id)
);
CREATE INDEX ix_budget_reservation_scopes_budget ON budget_reservation_scopes (budget_id);

CREATE TABLE budget_alerts (
    budget_id {uuid} NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    threshold_pct INTEGER NOT NULL CHECK (threshold_pct > 0 AND threshold_pct <= 1000),
    spent_nano_usd BIGINT NOT NULL CHECK (spent_nano_usd >= 0),
    event_id {uuid} NOT NULL,
    created_at {ts} NOT NULL DEFAULT {now},
    PRIMARY KEY (budget_id, threshold_pct)
);

CREATE TABLE cost_entries (
    id {serial},
    execution_id {uuid} REFERENCES workflow_executions (id) ON DELETE CASCADE,
    step_id {uuid} REFERENCES step_executions (id) ON DELETE CASCADE,
    workflow_name VARCHAR(255),
    reservation_id {uuid},
    model VARCHAR(255) NOT NULL CHECK (length(model) > 0),
    prompt_tokens BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cached_prompt_tokens BIGINT NOT NULL DEFAULT 0 CHECK (cached_prompt_tokens >= 0),
    cache_write_tokens BIGINT NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    reasoning_tokens BIGINT NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    cost_nano_usd BIGINT NOT NULL CHECK (cost_nano_usd >= 0),
    created_at {ts} NOT NULL DEFAULT {now}
);
CREATE INDEX ix_cost_entries_execution_id ON cost_entries (execution_id);
CREATE INDEX ix_cost_entries_created_at ON cost_entries (created_at);
CREATE INDEX ix_cost_entries_workflow_name ON cost_entries (workflow_name, created_at);
CREATE INDEX ix_cost_entries_model ON cost_entries (model, created_at);
"#;

const DOWN: &str = r#"
DROP TABLE cost_entries;
DROP TABLE budget_alerts;
DROP TABLE budget_reservation_scopes;
DROP TABLE budget_reservations;
DROP TABLE budgets;
"#;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::exec_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::exec_script(manager, DOWN).await
    }
}
