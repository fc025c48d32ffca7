//! `wflo-db-migrate URL`: applies Wflo's migrations to a database (used by `cargo xtask db setup`;
//! users run `wflo migrate`).

use std::process::ExitCode;
use wflo_db::{Db, DbConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: wflo-db-migrate DATABASE_URL");
        return ExitCode::from(2);
    };
    let result = async {
        let config = DbConfig::builder(&url).auto_migrate(true).build()?;
        let db = Db::connect(&config).await?;
        let status = db.schema_status().await?;
        println!(
            "{}: {} migration(s) applied, {} pending",
            db.redacted_url(),
            status.applied.len(),
            status.pending.len()
        );
        db.close().await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
