//! API tokens of the HTTP server: a name, a role, and the SHA-256 of the secret (the secret
//! itself is shown once, when created, and never stored); revoked tokens are kept (with the
//! time of their revocation) so the audit trail's actors stay resolvable.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000007_api_tokens"
    }
}

const UP: &str = r#"
CREATE TABLE api_tokens (
    id {uuid} PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    role VARCHAR(16) NOT NULL CHECK (role IN ('VIEWER', 'APPROVER', 'OPERATOR', 'ADMIN')),
    token_hash VARCHAR(64) NOT NULL,
    created_at {ts} NOT NULL DEFAULT {now},
    last_used_at {ts},
    revoked_at {ts}
);
CREATE UNIQUE INDEX ux_api_tokens_token_hash ON api_tokens (token_hash);
CREATE UNIQUE INDEX ux_api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
CREATE INDEX ix_workflow_executions_created_at_id ON workflow_executions (created_at, id);
"#;

const DOWN: &str = r#"
DROP INDEX ix_workflow_executions_created_at_id;
DROP INDEX ux_api_tokens_active_name;
DROP INDEX ux_api_tokens_token_hash;
DROP TABLE api_tokens;
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
