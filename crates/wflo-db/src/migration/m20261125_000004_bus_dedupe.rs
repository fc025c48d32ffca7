//! Processed-event ids per consumer group: a consumer records each event id in the same
//! transaction as its effects, so a redelivered event (the relay may publish twice after a
//! lost acknowledgement) is recognised and its effects are not applied twice.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000004_bus_dedupe"
    }
}

const UP: &str = r#"
CREATE TABLE processed_events (
    consumer_group VARCHAR(255) NOT NULL,
    event_id {uuid} NOT NULL,
    processed_at {ts} NOT NULL DEFAULT {now},
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX ix_processed_events_processed_at ON processed_events (processed_at);
"#;

const DOWN: &str = r#"
DROP TABLE processed_events;
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
