//! `wflo migrate`: apply the migrations and print the schema status.

use anyhow::Context;
use wflo_core::db::{Db, DbConfig, redact};

pub(crate) async fn migrate() -> anyhow::Result<u8> {
    let config = super::config()?;
    let url = redact(config.database_url());
    let db = Db::connect(
        &DbConfig::builder(config.database_url())
            .auto_migrate(true)
            .build()?,
    )
    .await
    .with_context(|| format!("cannot migrate the database {url}"))?;
    let status = db.schema_status().await?;
    println!("database {url} ({:?})", db.backend());
    for m in &status.applied {
        println!("  applied  {m}");
    }
    for m in &status.pending {
        println!("  pending  {m}");
    }
    for m in &status.unknown {
        println!("  unknown  {m} (made by a newer wflo)");
    }
    if status.pending.is_empty() && status.unknown.is_empty() {
        println!(
            "schema up to date: {} migration(s) applied",
            status.applied.len()
        );
        Ok(0)
    } else {
        Err(crate::exit::coded(
            crate::exit::FAILED,
            format!(
                "the schema is not current ({} pending, {} unknown)",
                status.pending.len(),
                status.unknown.len()
            ),
        ))
    }
}
