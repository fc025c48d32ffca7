//! Test tooling the service-backed suites of every crate reuse (feature `testing`).
//!
//! [`TestDb::new`] gives each test its own fresh, migrated database:
//! * **PostgreSQL**: a database named from a hash of the test's name on the server of
//!   `WFLO_TEST_DATABASE_URL` (which `cargo xtask itest` exports); dropped when the test passes,
//!   kept when it fails so it can be inspected (the name is printed).
//! * **SQLite**: a file in a temporary directory, removed on success and kept on failure.
//!
//! With `WFLO_TEST_CONTAINERS=1` and the `testcontainers` feature, PostgreSQL comes from a
//! container started once per test process instead (for machines whose Docker can pull images).
//!
//! Inside an integration suite a missing service is a failure, never a skip: `TestDb::new`
//! panics with what to run.

use crate::{Backend, Db, DbConfig};
use sea_orm::{ConnectionTrait, Database};
use sha2::{Digest, Sha256};

/// A database owned by one test.
pub struct TestDb {
    db: Db,
    name: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String },
    Sqlite { dir: Option<tempfile::TempDir> },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

/// The variable naming the PostgreSQL server (and maintenance database) tests use.
pub const DATABASE_URL_VAR: &str = "WFLO_TEST_DATABASE_URL";

/// The admin URL for PostgreSQL test databases; panics with what to do when unset.
pub fn postgres_admin_url() -> String {
    #[cfg(feature = "testcontainers")]
    if std::env::var("WFLO_TEST_CONTAINERS").as_deref() == Ok("1") {
        return containers::postgres_url();
    }
    std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{DATABASE_URL_VAR} is not set: run this suite with `cargo xtask itest` (it starts \
             PostgreSQL and exports the variable), or export it yourself, e.g. \
             postgres://wflo_user:wflo_password@127.0.0.1:5432/wflo_test"
        )
    })
}

/// `postgres://u:p@h:port/old?x` with the database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("a valid PostgreSQL URL");
    parsed.set_path(&format!("/{db}"));
    parsed.to_string()
}

/// A short, stable name for the running test (the libtest thread name) plus `salt`.
fn test_db_name(salt: &str) -> (String, String) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed-test").to_string();
    let digest = Sha256::digest(format!("{test}|{salt}").as_bytes());
    (format!("wflo_t_{}", &hex::encode(digest)[..20]), test)
}

impl TestDb {
    /// A fresh, migrated database on `backend`, owned by the calling test.
    pub async fn new(backend: Backend) -> TestDb {
        Self::named(backend, "").await
    }

    /// Like [`TestDb::new`], with `salt` distinguishing several databases in one test.
    pub async fn named(backend: Backend, salt: &str) -> TestDb {
        let (name, test) = test_db_name(&format!("{backend:?}{salt}"));
        match backend {
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let admin = Database::connect(admin_url.as_str()).await.unwrap_or_else(|e| {
                    panic!(
                        "cannot reach PostgreSQL at {}: {e}; start it with `cargo xtask services up postgres` \
                         and `cargo xtask db setup`",
                        crate::redact(&admin_url)
                    )
                });
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .expect("drop a leftover test database");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap_or_else(|e| panic!("create test database {name} for {test}: {e}"));
                let _ = admin.close().await;
                let url = with_database(&admin_url, &name);
                let db = Db::connect(
                    &DbConfig::builder(url)
                        .max_connections(20)
                        .build()
                        .expect("config"),
                )
                .await
                .unwrap_or_else(|e| panic!("connect to test database {name}: {e}"));
                TestDb {
                    db,
                    name,
                    cleanup: Cleanup::Postgres { admin_url },
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{name}-"))
                    .tempdir()
                    .expect("create a temporary directory");
                let path = dir.path().join("wflo.db");
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let db = Db::connect(
                    &DbConfig::builder(url)
                        .max_connections(8)
                        .build()
                        .expect("config"),
                )
                .await
                .unwrap_or_else(|e| panic!("open test database {}: {e}", path.display()));
                TestDb {
                    db,
                    name: path.display().to_string(),
                    cleanup: Cleanup::Sqlite { dir: Some(dir) },
                }
            }
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The database's name (PostgreSQL) or file path (SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this test's database (PostgreSQL: with credentials).
    pub fn url(&self) -> String {
        match &self.cleanup {
            Cleanup::Postgres { admin_url } => with_database(admin_url, &self.name),
            Cleanup::Sqlite { .. } => format!("sqlite://{}?mode=rwc", self.name),
        }
    }
}

impl std::ops::Deref for TestDb {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        match &mut self.cleanup {
            Cleanup::Sqlite { dir } => {
                if let Some(dir) = dir.take()
                    && failed
                {
                    let kept = dir.keep();
                    eprintln!(
                        "test failed: kept its SQLite database in {}",
                        kept.display()
                    );
                }
            }
            Cleanup::Postgres { admin_url } => {
                if failed {
                    eprintln!("test failed: kept its PostgreSQL database {}", self.name);
                    return;
                }
                let admin_url = admin_url.clone();
                let name = self.name.clone();
                // Drop runs outside async; a short-lived runtime on its own thread drops the
                // database (FORCE ends our pool's connections).
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime");
                    rt.block_on(async {
                        if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                                ))
                                .await;
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

#[cfg(feature = "testcontainers")]
mod containers {
    use std::sync::OnceLock;
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::{Container, runners::SyncRunner};

    static PG: OnceLock<(Container<Postgres>, String)> = OnceLock::new();

    /// Starts one PostgreSQL container per test process (kept until the process exits).
    pub(super) fn postgres_url() -> String {
        PG.get_or_init(|| {
            let container = std::thread::spawn(|| {
                Postgres::default()
                    .with_user("wflo_user")
                    .with_password("wflo_password")
                    .with_db_name("wflo_test")
                    .start()
                    .expect("start a PostgreSQL container (WFLO_TEST_CONTAINERS=1 needs Docker that can pull postgres)")
            })
            .join()
            .expect("container thread");
            let port = container.get_host_port_ipv4(5432).expect("mapped port");
            let url = format!("postgres://wflo_user:wflo_password@127.0.0.1:{port}/wflo_test");
            (container, url)
        })
        .1
        .clone()
    }
}
