//! The migrations: the only way Wflo's schema is made.
//!
//! Each migration is one SQL text written against a handful of type placeholders, so the
//! PostgreSQL and SQLite schemas cannot drift apart: `{uuid}`, `{json}`, `{ts}` (a timestamp
//! with time zone), `{now}` (its server default), `{serial}` (a 64-bit auto-increment key).

mod m20261125_000001_core;
mod m20261125_000002_bus;
mod m20261125_000003_costs;
mod m20261125_000004_bus_dedupe;
mod m20261201_000005_drivers;
mod m20261201_000006_execution_contract;
mod m20261201_000007_api_tokens;
mod m20261201_000008_webhooks;

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

pub(crate) struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_core::Migration),
            Box::new(m20261125_000002_bus::Migration),
            Box::new(m20261125_000003_costs::Migration),
            Box::new(m20261125_000004_bus_dedupe::Migration),
            Box::new(m20261201_000005_drivers::Migration),
            Box::new(m20261201_000006_execution_contract::Migration),
            Box::new(m20261201_000007_api_tokens::Migration),
            Box::new(m20261201_000008_webhooks::Migration),
        ]
    }
}

/// Names of every migration this build knows, in order.
pub(crate) fn known() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

/// Expands the type placeholders for `backend`.
fn dialect(sql: &str, backend: DbBackend) -> String {
    let pairs: [(&str, &str); 5] = match backend {
        DbBackend::Postgres => [
            ("{uuid}", "UUID"),
            ("{json}", "JSONB"),
            ("{ts}", "TIMESTAMPTZ"),
            ("{now}", "now()"),
            (
                "{serial}",
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            ),
        ],
        _ => [
            ("{uuid}", "BLOB"),
            ("{json}", "TEXT"),
            ("{ts}", "TEXT"),
            ("{now}", "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"),
            ("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        ],
    };
    pairs
        .iter()
        .fold(sql.to_string(), |acc, (from, to)| acc.replace(from, to))
}

/// Runs each `;`-terminated statement of `sql` (placeholders expanded) in order.
async fn exec_script(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let sql = dialect(sql, conn.get_database_backend());
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute_unprepared(stmt).await?;
    }
    Ok(())
}
