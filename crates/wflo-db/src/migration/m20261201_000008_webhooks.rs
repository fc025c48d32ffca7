//! Webhooks: where to send which events, and one delivery row per webhook and outbox event.
//!
//! A webhook's secret is stored as written (not hashed): the dispatcher needs it to sign every
//! body with HMAC-SHA256, as the receiver does to check it. Treat the database as holding
//! secrets.
//!
//! A delivery is unique per (webhook, event), so fanning an event out twice (after a restart,
//! or by two server instances) stores it once. The dispatcher's position in the outbox is a
//! row of `consumer_offsets` (group `wflo-webhooks`).

use sea_orm_migration::prelude::*;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000008_webhooks"
    }
}

const UP: &str = r#"
CREATE TABLE webhooks (
    id {uuid} PRIMARY KEY,
    name VARCHAR(100) NOT NULL CHECK (length(name) > 0),
    url TEXT NOT NULL CHECK (url LIKE 'http://%' OR url LIKE 'https://%'),
    event_types {json} NOT NULL,
    format VARCHAR(8) NOT NULL CHECK (format IN ('JSON', 'SLACK')),
    secret VARCHAR(200) NOT NULL CHECK (length(secret) >= 16),
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_at {ts} NOT NULL DEFAULT {now},
    CONSTRAINT uq_webhooks_name UNIQUE (name)
);

CREATE TABLE webhook_deliveries (
    id {uuid} PRIMARY KEY,
    webhook_id {uuid} NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    outbox_id BIGINT NOT NULL,
    event_id {uuid} NOT NULL,
    event_type VARCHAR(32) NOT NULL CHECK (event_type IN
        ('approval.requested', 'approval.decided', 'execution.finished', 'cost.budget_alert')),
    status VARCHAR(16) NOT NULL DEFAULT 'PENDING' CHECK (status IN
        ('PENDING', 'DELIVERED', 'FAILED')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at {ts} NOT NULL,
    lease_token {uuid},
    last_status INTEGER,
    last_error TEXT,
    created_at {ts} NOT NULL DEFAULT {now},
    delivered_at {ts},
    CONSTRAINT uq_webhook_deliveries_webhook_event UNIQUE (webhook_id, event_id)
);
CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'PENDING';
CREATE INDEX ix_webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);
"#;

const DOWN: &str = r#"
DELETE FROM consumer_offsets WHERE consumer_group = 'wflo-webhooks';
DROP INDEX ix_webhook_deliveries_webhook;
DROP INDEX ix_webhook_deliveries_due;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
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
