//! `cargo xtask db setup`: the role, the databases and their migrations.

use crate::services::{POSTGRES_PORT, psql_superuser};
use crate::util;
use anyhow::{Context, Result, bail};

pub(crate) const USER: &str = "wflo_user";
pub(crate) const PASSWORD: &str = "wflo_password";

/// The URL of a database on the local server as `wflo_user`.
pub(crate) fn url(database: &str) -> String {
    format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{POSTGRES_PORT}/{database}")
}

/// The test database URL: `WFLO_TEST_DATABASE_URL`, or `wflo_test` on the local server.
pub(crate) fn test_url() -> String {
    std::env::var("WFLO_TEST_DATABASE_URL").unwrap_or_else(|_| url("wflo_test"))
}

/// The database name at the end of a PostgreSQL URL.
fn database_name(url: &str) -> Result<String> {
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, db)| db.split(['?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    if path.is_empty()
        || !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!(
            "cannot read a database name from `{url}`; expected postgres://user:pass@host:port/NAME"
        );
    }
    Ok(path.to_string())
}

/// Role `wflo_user` (LOGIN, CREATEDB: each integration test creates its own database),
/// databases `wflo` and the test database, then the migrations on both.
pub(crate) fn setup() -> Result<()> {
    let role = psql_superuser(
        &format!("select 1 from pg_roles where rolname = '{USER}'"),
        "postgres",
    )?;
    if role.is_empty() {
        psql_superuser(
            &format!("create role {USER} login createdb password '{PASSWORD}'"),
            "postgres",
        )?;
        println!("created role {USER}");
    } else {
        psql_superuser(
            &format!("alter role {USER} login createdb password '{PASSWORD}'"),
            "postgres",
        )?;
    }
    let test_url = test_url();
    let test_db = database_name(&test_url)?;
    for db in ["wflo".to_string(), test_db.clone()] {
        let exists = psql_superuser(
            &format!("select 1 from pg_database where datname = '{db}'"),
            "postgres",
        )?;
        if exists.is_empty() {
            psql_superuser(
                &format!("create database \"{db}\" owner {USER}"),
                "postgres",
            )?;
            println!("created database {db}");
        }
    }
    for target in [url("wflo"), test_url] {
        util::run(
            util::cargo()
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "wflo-db",
                    "--bin",
                    "wflo-db-migrate",
                    "--",
                ])
                .arg(&target),
        )
        .with_context(|| "run the migrations".to_string())?;
    }
    Ok(())
}
