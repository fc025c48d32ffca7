//! What a run was started as, in columns of its own: the workflow's name (so a settle or an
//! event never reads the definition back to learn it), the execution's budget in nano-USD, and
//! an embedder's correlation id beside the trace id. Executions stored before kept the budget
//! inside `inputs` as `{"inputs": {...}, "budget_usd": "0.50"}`; this migration moves it out and
//! leaves `inputs` holding the inputs alone. Rows of any other shape are left as they were.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000006_execution_contract"
    }
}

const UP: &str = r#"
ALTER TABLE workflow_executions ADD COLUMN workflow_name VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE workflow_executions ADD COLUMN budget_nano_usd BIGINT
    CHECK (budget_nano_usd IS NULL OR budget_nano_usd > 0);
ALTER TABLE workflow_executions ADD COLUMN correlation_id VARCHAR(255);
CREATE INDEX ix_workflow_executions_workflow_name ON workflow_executions (workflow_name, created_at);
CREATE INDEX ix_workflow_executions_correlation_id ON workflow_executions (correlation_id);
UPDATE workflow_executions SET workflow_name = (SELECT d.name FROM workflow_definitions d
    WHERE d.id = workflow_executions.workflow_id);
"#;

/// Moves `inputs.budget_usd` into its column and `inputs.inputs` up, for rows written in the
/// old shape: an object whose only keys are `inputs` (an object) and `budget_usd`.
const UP_POSTGRES: &str = r#"
UPDATE workflow_executions SET
    budget_nano_usd = CASE WHEN jsonb_typeof(inputs->'budget_usd') IN ('string', 'number')
        THEN ROUND((inputs->>'budget_usd')::numeric * 1000000000)::bigint END,
    inputs = inputs->'inputs'
WHERE jsonb_typeof(inputs) = 'object' AND jsonb_typeof(inputs->'inputs') = 'object'
    AND (inputs - 'inputs' - 'budget_usd') = '{}'::jsonb;
"#;

const UP_SQLITE: &str = r#"
UPDATE workflow_executions SET
    budget_nano_usd = CASE WHEN json_type(inputs, '$.budget_usd') IN ('text', 'integer', 'real')
        THEN CAST(ROUND(CAST(json_extract(inputs, '$.budget_usd') AS REAL) * 1000000000) AS INTEGER)
        END,
    inputs = json_extract(inputs, '$.inputs')
WHERE json_type(inputs) = 'object' AND json_type(inputs, '$.inputs') = 'object'
    AND (SELECT count(*) FROM json_each(workflow_executions.inputs)
        WHERE key NOT IN ('inputs', 'budget_usd')) = 0;
"#;

/// Puts every row back in the old shape (rows this version wrote included).
const DOWN_POSTGRES: &str = r#"
UPDATE workflow_executions SET inputs = jsonb_build_object('inputs', inputs, 'budget_usd',
    CASE WHEN budget_nano_usd IS NULL THEN NULL
        ELSE to_jsonb(trim_scale(budget_nano_usd::numeric / 1000000000)::text) END)
WHERE jsonb_typeof(inputs) = 'object';
"#;

const DOWN_SQLITE: &str = r#"
UPDATE workflow_executions SET inputs = json_object('inputs', json(inputs), 'budget_usd',
    CASE WHEN budget_nano_usd IS NULL THEN NULL
        ELSE CAST(budget_nano_usd / 1000000000.0 AS TEXT) END)
WHERE json_type(inputs) = 'object';
"#;

const DOWN: &str = r#"
DROP INDEX ix_workflow_executions_correlation_id;
DROP INDEX ix_workflow_executions_workflow_name;
ALTER TABLE workflow_executions DROP COLUMN correlation_id;
ALTER TABLE workflow_executions DROP COLUMN budget_nano_usd;
ALTER TABLE workflow_executions DROP COLUMN workflow_name;
"#;

fn postgres(manager: &SchemaManager<'_>) -> bool {
    manager.get_connection().get_database_backend() == DbBackend::Postgres
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::exec_script(manager, UP).await?;
        let data = if postgres(manager) {
            UP_POSTGRES
        } else {
            UP_SQLITE
        };
        super::exec_script(manager, data).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let data = if postgres(manager) {
            DOWN_POSTGRES
        } else {
            DOWN_SQLITE
        };
        super::exec_script(manager, data).await?;
        super::exec_script(manager, DOWN).await
    }
}
