//! Who drives an execution: the engine that runs it (`LOCAL`, the in-process engine, or
//! `TEMPORAL`), and the lease of its in-process driver — holder, expiry and a fencing counter
//! that grows with every acquisition — so two processes never run one execution at once and a
//! run whose driver died is recognised once its lease has expired.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000005_drivers"
    }
}

const UP: &str = r#"
ALTER TABLE workflow_executions ADD COLUMN engine VARCHAR(16) NOT NULL DEFAULT 'LOCAL'
    CHECK (engine IN ('LOCAL', 'TEMPORAL'));
ALTER TABLE workflow_executions ADD COLUMN lease_holder VARCHAR(255);
ALTER TABLE workflow_executions ADD COLUMN lease_expires_at {ts};
ALTER TABLE workflow_executions ADD COLUMN lease_fence BIGINT NOT NULL DEFAULT 0
    CHECK (lease_fence >= 0);
CREATE INDEX ix_workflow_executions_lease_expires_at ON workflow_executions (lease_expires_at);
"#;

const DOWN: &str = r#"
DROP INDEX ix_workflow_executions_lease_expires_at;
ALTER TABLE workflow_executions DROP COLUMN lease_fence;
ALTER TABLE workflow_executions DROP COLUMN lease_expires_at;
ALTER TABLE workflow_executions DROP COLUMN lease_holder;
ALTER TABLE workflow_executions DROP COLUMN engine;
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
