//! The one error type of wflo-db.

/// Errors of the persistence layer. Messages are lower-case and say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL cannot be used.
    #[error("invalid database url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or refused the login.
    #[error(
        "cannot connect to the database at {url}: {reason}; check that the server runs \
         (`cargo xtask services up postgres`), that the database exists (`cargo xtask db setup`) \
         and that the user and password are right"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's reason.
        reason: String,
    },
    /// The database holds migrations this build does not know: it was made by a newer Wflo.
    #[error(
        "the database schema is newer than this build of wflo (unknown migrations: {}); \
         upgrade wflo, or point it at another database",
        unknown.join(", ")
    )]
    SchemaTooNew {
        /// Applied migrations this build does not know.
        unknown: Vec<String>,
    },
    /// The database lacks migrations this build needs.
    #[error(
        "the database schema is behind this build ({pending} pending migration(s)); run `wflo migrate`"
    )]
    SchemaOutdated {
        /// How many migrations are pending.
        pending: usize,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A row with the same unique key exists.
    #[error("{entity} already exists: {detail}")]
    AlreadyExists {
        /// The kind of row.
        entity: &'static str,
        /// The database's description of the conflict.
        detail: String,
    },
    /// A referenced row does not exist.
    #[error("{entity} refers to a row that does not exist: {detail}")]
    ForeignKey {
        /// The kind of row being written.
        entity: &'static str,
        /// The database's description of the violation.
        detail: String,
    },
    /// A value was refused by a CHECK constraint or by validation before the database.
    #[error("invalid {entity}: {detail}")]
    Invalid {
        /// The kind of value.
        entity: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// No row with that key.
    #[error("{entity} {id} not found")]
    NotFound {
        /// The kind of row.
        entity: &'static str,
        /// Its key.
        id: String,
    },
    /// A status change the state machine does not allow.
    #[error("{entity} {id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The kind of row.
        entity: &'static str,
        /// Its key.
        id: String,
        /// Its current status.
        from: String,
        /// The refused status.
        to: String,
    },
    /// Another driver holds the execution's lease.
    #[error(
        "execution {id} is driven by {holder} until {until}; wait for it to finish or stop, or \
         resume it after that time if its driver died"
    )]
    Leased {
        /// The execution.
        id: String,
        /// Who holds the lease.
        holder: String,
        /// When the lease expires unless renewed.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// A lease was taken over by another driver (or released): its old holder must stop.
    #[error(
        "the lease of {holder} on execution {id} was lost (another driver took it over); this \
         process stops driving it"
    )]
    LeaseLost {
        /// The execution.
        id: String,
        /// The holder that lost it.
        holder: String,
    },
    /// Any other database failure.
    #[error("database error while {context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<wflo_types::Error> for Error {
    fn from(e: wflo_types::Error) -> Self {
        match e {
            wflo_types::Error::UnknownValue { what, .. } => Error::Invalid {
                entity: what,
                detail: e.to_string(),
            },
            other => Error::Invalid {
                entity: "stored value",
                detail: other.to_string(),
            },
        }
    }
}

impl Error {
    /// Classifies a driver error: constraint violations become typed errors.
    pub(crate) fn from_db(entity: &'static str, context: &str, err: sea_orm::DbErr) -> Error {
        use sea_orm::SqlErr;
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => {
                return Error::AlreadyExists { entity, detail };
            }
            Some(SqlErr::ForeignKeyConstraintViolation(detail)) => {
                return Error::ForeignKey { entity, detail };
            }
            _ => {}
        }
        let text = err.to_string();
        let lower = text.to_lowercase();
        if lower.contains("check constraint") {
            return Error::Invalid {
                entity,
                detail: text,
            };
        }
        Error::Database {
            context: context.to_string(),
            source: Box::new(err),
        }
    }

    /// Whether running the failed operation again may succeed: the database aborted its
    /// transaction (so nothing of it was applied) because of contention — a PostgreSQL
    /// deadlock, serialization failure, lock not available or multixact conflict, or a busy or
    /// locked SQLite database. Constraint violations, refused transitions and lost
    /// connections are not retryable here (a lost connection may have committed).
    pub fn is_retryable(&self) -> bool {
        use sea_orm::{DbErr, RuntimeErr, sqlx};
        let Error::Database { source, .. } = self else {
            return false;
        };
        let Some(
            DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e))
            | DbErr::Conn(RuntimeErr::SqlxError(e)),
        ) = source.downcast_ref::<DbErr>()
        else {
            return false;
        };
        let sqlx::Error::Database(e) = e.as_ref() else {
            return false;
        };
        let code = e.code().unwrap_or_default();
        if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
            return code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
        }
        matches!(&*code, "40001" | "40P01" | "55P03")
            // An internal error (XX000) PostgreSQL raises under heavy KEY SHARE + UPDATE
            // contention on one row; the transaction was rolled back.
            || e.message().contains("new multixact has more than one updating member")
    }

    /// Whether a unique constraint refused the write (the caller may pick another key).
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }
}
