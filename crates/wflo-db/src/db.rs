//! Connecting: configuration, the connection pool, transactions and the executor trait that lets
//! every repository run on either.

use crate::migration::{self, Migrator};
use crate::repo::{
    ApiTokens, Approvals, Budgets, ConsumerOffsets, Costs, Definitions, Executions, Outbox,
    Rollbacks, Snapshots, Steps, Webhooks,
};
use crate::{Error, Result};
use sea_orm::sqlx::sqlite::SqliteSynchronous;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

/// The database products Wflo runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite, a file or in memory (the embedded default).
    Sqlite,
}

impl Backend {
    /// The backend a URL names, from its scheme.
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(Error::InvalidUrl {
                url: redact(url),
                reason: "the scheme must be postgres://, postgresql:// or sqlite:// \
                         (for example sqlite://wflo.db?mode=rwc)"
                    .into(),
            }),
        }
    }
}

/// Replaces the password of a URL with `***` (for messages and logs).
pub use wflo_types::redact_url as redact;

/// How to reach the database. Built with [`DbConfig::builder`].
#[derive(Clone)]
pub struct DbConfig {
    url: String,
    max_connections: u32,
    connect_timeout: Duration,
    acquire_timeout: Duration,
    auto_migrate: bool,
    log_statements: bool,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("auto_migrate", &self.auto_migrate)
            .field("log_statements", &self.log_statements)
            .finish()
    }
}

impl DbConfig {
    /// Starts a configuration for `url` (`postgres://user:pass@host/db`,
    /// `sqlite://file.db?mode=rwc`, `sqlite::memory:`).
    pub fn builder(url: impl Into<String>) -> DbConfigBuilder {
        DbConfigBuilder {
            config: DbConfig {
                url: url.into(),
                max_connections: 10,
                connect_timeout: Duration::from_secs(5),
                acquire_timeout: Duration::from_secs(30),
                auto_migrate: true,
                log_statements: false,
            },
        }
    }

    /// The URL with its password redacted.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The backend the URL names.
    pub fn backend(&self) -> Backend {
        Backend::from_url(&self.url).unwrap_or(Backend::Sqlite)
    }
}

/// Builder of [`DbConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct DbConfigBuilder {
    config: DbConfig,
}

impl DbConfigBuilder {
    /// Pool size (default 10; SQLite in memory always uses one connection).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.config.max_connections = n;
        self
    }

    /// How long to wait for the server when connecting (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// How long to wait for a free pooled connection (default 30 s).
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.config.acquire_timeout = d;
        self
    }

    /// Apply pending migrations on connect (default true). When false, a database that lacks
    /// migrations is refused with [`Error::SchemaOutdated`].
    pub fn auto_migrate(mut self, yes: bool) -> Self {
        self.config.auto_migrate = yes;
        self
    }

    /// Emit every statement as a `tracing` event (target `sqlx::query`, level INFO, the SQL in
    /// `summary` and `db.statement`) for a subscriber to show or count (default off).
    pub fn log_statements(mut self, yes: bool) -> Self {
        self.config.log_statements = yes;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<DbConfig> {
        let c = &self.config;
        Backend::from_url(&c.url)?;
        if c.max_connections == 0 {
            return Err(Error::Invalid {
                entity: "database config",
                detail: "max_connections must be at least 1".into(),
            });
        }
        if c.connect_timeout.is_zero() || c.acquire_timeout.is_zero() {
            return Err(Error::Invalid {
                entity: "database config",
                detail: "timeouts must be greater than zero".into(),
            });
        }
        Ok(self.config)
    }
}

/// A pool of connections to the Wflo database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    backend: Backend,
    url: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish()
    }
}

impl Db {
    /// Connects, refuses a schema newer than this build, and applies pending migrations (unless
    /// `auto_migrate(false)`, in which case a schema that is behind is refused).
    pub async fn connect(config: &DbConfig) -> Result<Db> {
        let backend = Backend::from_url(&config.url)?;
        let redacted = config.redacted_url();
        let in_memory = config.url.contains(":memory:") || config.url.contains("mode=memory");
        let mut opts = ConnectOptions::new(config.url.clone());
        opts.max_connections(if in_memory { 1 } else { config.max_connections })
            .min_connections(if in_memory { 1 } else { 0 })
            .connect_timeout(config.connect_timeout)
            .acquire_timeout(config.acquire_timeout)
            .sqlx_logging(config.log_statements)
            // Every commit is synced to disk (the SQLite default, stated here because the
            // guarantees depend on it: a RUNNING step and a paid LLM response survive a power
            // loss, not only a process crash).
            .map_sqlx_sqlite_opts(|o| o.synchronous(SqliteSynchronous::Full));
        let conn = Database::connect(opts).await.map_err(|e| Error::Connect {
            url: redacted.clone(),
            reason: e.to_string().to_lowercase(),
        })?;
        let db = Db {
            conn,
            backend,
            url: redacted,
        };
        if backend == Backend::Sqlite && !in_memory {
            db.use_wal().await;
        }
        let status = db.schema_status().await?;
        if !status.unknown.is_empty() {
            return Err(Error::SchemaTooNew {
                unknown: status.unknown,
            });
        }
        if !status.pending.is_empty() {
            if config.auto_migrate {
                db.migrate_up().await?;
            } else {
                return Err(Error::SchemaOutdated {
                    pending: status.pending.len(),
                });
            }
        }
        Ok(db)
    }

    /// Puts a SQLite file in write-ahead-log mode (a lasting property of the file; a no-op when
    /// it already is): a commit appends to the log and syncs it once, where the default rollback
    /// journal syncs both the journal and the database file, and readers no longer block the
    /// writer. Durability is unchanged (`synchronous = FULL`). When the mode cannot be
    /// changed (another connection holds the file, or it is read-only) the database is used as
    /// it is.
    async fn use_wal(&self) {
        if let Err(e) = self
            .conn
            .execute_unprepared("PRAGMA journal_mode = WAL")
            .await
        {
            tracing::warn!(
                database = %self.url,
                error = %e,
                "could not switch SQLite to write-ahead logging; keeping its journal mode"
            );
        }
    }

    /// The backend this pool talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL, password redacted.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// Runs `select 1`: the connectivity check.
    pub async fn ping(&self) -> Result<()> {
        self.conn
            .ping()
            .await
            .map_err(|e| Error::from_db("connection", "pinging the database", e))
    }

    /// Which migrations are applied, pending, or unknown to this build.
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        let applied: Vec<String> = Migrator::get_migration_models(&self.conn)
            .await
            .map_err(|e| Error::from_db("migration", "reading applied migrations", e))?
            .into_iter()
            .map(|m| m.version)
            .collect();
        let known = migration::known();
        Ok(SchemaStatus {
            pending: known
                .iter()
                .filter(|k| !applied.contains(k))
                .cloned()
                .collect(),
            unknown: applied
                .iter()
                .filter(|a| !known.contains(a))
                .cloned()
                .collect(),
            applied,
        })
    }

    /// Applies every pending migration. Two processes starting together on a fresh database
    /// (a worker and a run, say) both try: the one that loses waits until the other's work is
    /// visible, and succeeds when nothing is left pending.
    pub async fn migrate_up(&self) -> Result<()> {
        let mut waited = 0u64;
        loop {
            let failure = match Migrator::up(&self.conn, None).await {
                Ok(()) => return Ok(()),
                Err(e) => Error::Migration(e.to_string().to_lowercase()),
            };
            if waited >= 10_000 {
                return Err(failure);
            }
            let pause = 100 + waited / 4;
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            waited += pause;
            if self.schema_status().await?.pending.is_empty() {
                return Ok(());
            }
        }
    }

    /// Reverts the last `steps` migrations (all when `None`).
    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<()> {
        Migrator::down(&self.conn, steps)
            .await
            .map_err(|e| Error::Migration(e.to_string().to_lowercase()))
    }

    /// The names of the tables in the database (for diagnostics and tests).
    pub async fn table_names(&self) -> Result<Vec<String>> {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT table_name AS name FROM information_schema.tables \
                 WHERE table_schema = current_schema() ORDER BY 1"
            }
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY 1"
            }
        };
        let rows = self
            .conn
            .query_all_raw(Statement::from_string(
                self.conn.get_database_backend(),
                sql,
            ))
            .await
            .map_err(|e| Error::from_db("table", "listing tables", e))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String>("", "name")
                    .map_err(|e| Error::from_db("table", "listing tables", e))
            })
            .collect()
    }

    /// Starts a transaction: what is written through it commits together or not at all.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken at once (waiting behind other
    /// writers for the busy timeout), so a transaction that reads before it writes never has to
    /// upgrade its lock, which SQLite would refuse at once with `database is locked`.
    pub async fn begin(&self) -> Result<Tx> {
        let inner = begin_write(&self.conn)
            .await
            .map_err(|e| Error::from_db("transaction", "beginning a transaction", e))?;
        Ok(Tx {
            inner,
            backend: self.backend,
        })
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(self) -> Result<()> {
        self.conn
            .close()
            .await
            .map_err(|e| Error::from_db("connection", "closing the pool", e))
    }
}

/// Migrations applied to a database, and how they compare to this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Applied, in order.
    pub applied: Vec<String>,
    /// Known to this build and not applied.
    pub pending: Vec<String>,
    /// Applied but unknown to this build (a newer Wflo made them).
    pub unknown: Vec<String>,
}

/// A database transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    inner: DatabaseTransaction,
    backend: Backend,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Tx {
    /// Commits everything written through this transaction.
    pub async fn commit(self) -> Result<()> {
        self.inner
            .commit()
            .await
            .map_err(|e| Error::from_db("transaction", "committing", e))
    }

    /// Discards everything written through this transaction.
    pub async fn rollback(self) -> Result<()> {
        self.inner
            .rollback()
            .await
            .map_err(|e| Error::from_db("transaction", "rolling back", e))
    }
}

/// Begins a transaction meant to write on `conn` (a savepoint when `conn` is a transaction):
/// `BEGIN IMMEDIATE` on SQLite (see [`Db::begin`]), a plain `BEGIN` elsewhere.
pub(crate) async fn begin_write<C>(conn: &C) -> std::result::Result<C::Transaction, sea_orm::DbErr>
where
    C: TransactionTrait,
{
    conn.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

pub(crate) mod sealed {
    use super::Backend;
    use sea_orm::{ConnectionTrait, TransactionTrait};

    /// Implemented by [`super::Db`] and [`super::Tx`] only.
    #[allow(unreachable_pub)]
    pub trait Sealed {
        type Conn: ConnectionTrait
            + TransactionTrait<Transaction = sea_orm::DatabaseTransaction>
            + Send
            + Sync;
        fn conn(&self) -> &Self::Conn;
        fn kind(&self) -> Backend;
    }

    impl Sealed for super::Db {
        type Conn = sea_orm::DatabaseConnection;
        fn conn(&self) -> &Self::Conn {
            &self.conn
        }
        fn kind(&self) -> Backend {
            self.backend
        }
    }

    impl Sealed for super::Tx {
        type Conn = sea_orm::DatabaseTransaction;
        fn conn(&self) -> &Self::Conn {
            &self.inner
        }
        fn kind(&self) -> Backend {
            self.backend
        }
    }
}

/// Something repositories can run on: the pool ([`Db`]) or a transaction ([`Tx`]).
///
/// Writing a state change and its outbox event through the same [`Tx`] makes them commit
/// together.
pub trait Executor: sealed::Sealed + Send + Sync + Sized {
    /// Workflow definitions.
    fn definitions(&self) -> Definitions<'_, Self> {
        Definitions::new(self)
    }
    /// Workflow executions, their status and their cost.
    fn executions(&self) -> Executions<'_, Self> {
        Executions::new(self)
    }
    /// Step executions.
    fn steps(&self) -> Steps<'_, Self> {
        Steps::new(self)
    }
    /// State snapshots.
    fn snapshots(&self) -> Snapshots<'_, Self> {
        Snapshots::new(self)
    }
    /// Approval requests.
    fn approvals(&self) -> Approvals<'_, Self> {
        Approvals::new(self)
    }
    /// Rollback actions.
    fn rollbacks(&self) -> Rollbacks<'_, Self> {
        Rollbacks::new(self)
    }
    /// API tokens of the HTTP server.
    fn api_tokens(&self) -> ApiTokens<'_, Self> {
        ApiTokens::new(self)
    }
    /// Webhooks and their deliveries.
    fn webhooks(&self) -> Webhooks<'_, Self> {
        Webhooks::new(self)
    }
    /// The transactional outbox.
    fn outbox(&self) -> Outbox<'_, Self> {
        Outbox::new(self)
    }
    /// Budgets, reservations and threshold alerts (wflo-cost's ledger).
    fn budgets(&self) -> Budgets<'_, Self> {
        Budgets::new(self)
    }
    /// The per-call cost ledger and its aggregates.
    fn costs(&self) -> Costs<'_, Self> {
        Costs::new(self)
    }
    /// Consumer offsets stored with a consumer's effects.
    fn consumer_offsets(&self) -> ConsumerOffsets<'_, Self> {
        ConsumerOffsets::new(self)
    }
}

impl Executor for Db {}
impl Executor for Tx {}
