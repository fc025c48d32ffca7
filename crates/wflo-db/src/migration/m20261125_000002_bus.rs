//! The transactional outbox (events written in the same transaction as the state change they
//! describe) and the consumer offsets stored with a consumer's effects.

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000002_bus"
    }
}

const UP: &str = r#"
CREATE TABLE outbox_events (
    id {serial},
    event_id {uuid} NOT NULL,
    topic VARCHAR(255) NOT NULL CHECK (length(topic) > 0),
    message_key VARCHAR(255),
    payload {json} NOT NULL,
    headers {json} NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error TEXT,
    created_at {ts} NOT NULL DEFAULT {now},
    published_at {ts},
    CONSTRAINT uq_outbox_events_event_id UNIQUE (event_id)
);
CREATE INDEX ix_outbox_events_unpublished ON outbox_events (id) WHERE published_at IS NULL;

CREATE TABLE consumer_offsets (
    consumer_group VARCHAR(255) NOT NULL,
    topic VARCHAR(255) NOT NULL,
    partition_id INTEGER NOT NULL CHECK (partition_id >= 0),
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    updated_at {ts} NOT NULL DEFAULT {now},
    PRIMARY KEY (consumer_group, topic, partition_id)
);
"#;

const DOWN: &str = r#"
DROP TABLE consumer_offsets;
DROP TABLE outbox_events;
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
