//! The workflow tables of the earlier system, corrected: real foreign keys with ON DELETE
//! behaviour, CHECK-ed status values, exact money (integer nano-USD), unique versions.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_core"
    }
}

const UP: &str = r#"
CREATE TABLE workflow_definitions (
    id {uuid} NOT NULL PRIMARY KEY,
    name VARCHAR(255) NOT NULL CHECK (length(name) > 0),
    version INTEGER NOT NULL CHECK (version > 0),
    description TEXT,
    definition {json} NOT NULL,
    created_at {ts} NOT NULL DEFAULT {now},
    updated_at {ts} NOT NULL DEFAULT {now},
    CONSTRAINT uq_workflow_definitions_name_version UNIQUE (name, version)
);
CREATE INDEX ix_workflow_definitions_name ON workflow_definitions (name);

CREATE TABLE workflow_executions (
    id {uuid} NOT NULL PRIMARY KEY,
    workflow_id {uuid} NOT NULL REFERENCES workflow_definitions (id) ON DELETE RESTRICT,
    status VARCHAR(32) NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'RUNNING', 'WAITING_APPROVAL', 'COMPLETED', 'FAILED', 'CANCELLED')),
    inputs {json} NOT NULL,
    outputs {json},
    error TEXT,
    cost_nano_usd BIGINT NOT NULL DEFAULT 0 CHECK (cost_nano_usd >= 0),
    prompt_tokens BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    snapshot_seq INTEGER NOT NULL DEFAULT 0 CHECK (snapshot_seq >= 0),
    trace_id VARCHAR(64),
    started_at {ts},
    completed_at {ts},
    created_at {ts} NOT NULL DEFAULT {now},
    updated_at {ts} NOT NULL DEFAULT {now}
);
CREATE INDEX ix_workflow_executions_workflow_id ON workflow_executions (workflow_id);
CREATE INDEX ix_workflow_executions_status ON workflow_executions (status);
CREATE INDEX ix_workflow_executions_created_at ON workflow_executions (created_at);

CREATE TABLE step_executions (
    id {uuid} NOT NULL PRIMARY KEY,
    execution_id {uuid} NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    step_key VARCHAR(255) NOT NULL CHECK (length(step_key) > 0),
    step_type VARCHAR(32) NOT NULL CHECK (length(step_type) > 0),
    status VARCHAR(32) NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'SKIPPED', 'CANCELLED', 'ROLLED_BACK')),
    attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    inputs {json},
    outputs {json},
    error TEXT,
    cost_nano_usd BIGINT NOT NULL DEFAULT 0 CHECK (cost_nano_usd >= 0),
    prompt_tokens BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    started_at {ts},
    completed_at {ts},
    created_at {ts} NOT NULL DEFAULT {now},
    updated_at {ts} NOT NULL DEFAULT {now},
    CONSTRAINT uq_step_executions_execution_step UNIQUE (execution_id, step_key)
);
CREATE INDEX ix_step_executions_status ON step_executions (status);

CREATE TABLE state_snapshots (
    id {uuid} NOT NULL PRIMARY KEY,
    execution_id {uuid} NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    version INTEGER NOT NULL CHECK (version > 0),
    step_key VARCHAR(255),
    state {json} NOT NULL,
    superseded_at {ts},
    created_at {ts} NOT NULL DEFAULT {now},
    CONSTRAINT uq_state_snapshots_execution_version UNIQUE (execution_id, version)
);

CREATE TABLE approval_requests (
    id {uuid} NOT NULL PRIMARY KEY,
    execution_id {uuid} NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    step_key VARCHAR(255),
    status VARCHAR(32) NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'APPROVED', 'REJECTED', 'EXPIRED', 'ESCALATED')),
    message TEXT NOT NULL,
    context {json} NOT NULL,
    risk_level VARCHAR(16) NOT NULL CHECK (risk_level IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    action_fingerprint VARCHAR(128) NOT NULL CHECK (length(action_fingerprint) > 0),
    approver_group VARCHAR(255),
    timeout_at {ts},
    timeout_policy VARCHAR(16) NOT NULL DEFAULT 'REJECT' CHECK (timeout_policy IN
        ('REJECT', 'APPROVE', 'ESCALATE')),
    escalate_to VARCHAR(255),
    decided_by VARCHAR(255),
    decision_reason TEXT,
    decided_at {ts},
    created_at {ts} NOT NULL DEFAULT {now},
    updated_at {ts} NOT NULL DEFAULT {now}
);
CREATE INDEX ix_approval_requests_execution_id ON approval_requests (execution_id);
CREATE INDEX ix_approval_requests_status ON approval_requests (status);

CREATE TABLE rollback_actions (
    id {uuid} NOT NULL PRIMARY KEY,
    execution_id {uuid} NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    snapshot_id {uuid} NOT NULL REFERENCES state_snapshots (id) ON DELETE CASCADE,
    status VARCHAR(32) NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED')),
    reason TEXT NOT NULL,
    initiated_by VARCHAR(255) NOT NULL,
    details {json} NOT NULL,
    error TEXT,
    created_at {ts} NOT NULL DEFAULT {now},
    completed_at {ts}
);
CREATE INDEX ix_rollback_actions_execution_id ON rollback_actions (execution_id);
CREATE INDEX ix_rollback_actions_snapshot_id ON rollback_actions (snapshot_id);
"#;

const DOWN: &str = r#"
DROP TABLE rollback_actions;
DROP TABLE approval_requests;
DROP TABLE state_snapshots;
DROP TABLE step_executions;
DROP TABLE workflow_executions;
DROP TABLE workflow_definitions;
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
