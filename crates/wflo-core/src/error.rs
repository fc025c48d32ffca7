//! The facade's error: which layer failed (the variant, with the layer's own error as
//! [`std::error::Error::source`]), what kind of failure it is ([`Error::kind`]) and whether
//! trying again may help ([`Error::is_retryable`], answered by the layer that raised it).

/// Everything that can fail in Wflo, by layer. Its message is the layer's; the layer's error is
/// its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Running workflows.
    #[error("{0}")]
    Runtime(#[from] wflo_runtime::Error),
    /// The database.
    #[error("{0}")]
    Db(#[from] wflo_db::Error),
    /// Costs and budgets.
    #[error("{0}")]
    Cost(#[from] wflo_cost::Error),
    /// LLM providers.
    #[error("{0}")]
    Llm(#[from] wflo_llm::Error),
    /// The sandbox.
    #[error("{0}")]
    Sandbox(#[from] wflo_sandbox::Error),
    /// Redis.
    #[error("{0}")]
    Cache(#[from] wflo_cache::Error),
    /// Kafka.
    #[error("{0}")]
    Bus(#[from] wflo_bus::Error),
    /// Temporal.
    #[error("{0}")]
    Temporal(#[from] wflo_temporal::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, whichever layer raised it: what a caller branches on
/// (an HTTP status, an exit code, a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A budget would be overshot: the call was not made.
    BudgetExceeded,
    /// A human (or an approval's timeout policy) rejected the step.
    Rejected,
    /// The request, definition or configuration is wrong: fix it, retrying will not help.
    InvalidInput,
    /// What was asked for does not exist.
    NotFound,
    /// The state does not allow it (already decided, already exists, held by another, a status
    /// change the state machine refuses), or the database aborted a contended transaction.
    Conflict,
    /// A service could not be reached or is overloaded (connection, 429, 5xx, open breaker).
    Unavailable,
    /// A time limit passed.
    Timeout,
    /// Anything else: a bug, or a failure the layer could not classify.
    Internal,
}

impl ErrorKind {
    /// The kind's name in `snake_case`, e.g. `budget_exceeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::Rejected => "rejected",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of failure this is.
    ///
    /// ```
    /// use wflo_core::{Error, ErrorKind};
    ///
    /// let e = Error::from(wflo_core::db::Error::NotFound {
    ///     entity: "execution",
    ///     id: "42".into(),
    /// });
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// assert!(!e.is_retryable());
    /// assert!(std::error::Error::source(&e).is_some(), "the layer's error is the source");
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::InvalidInput,
            Error::Runtime(e) => runtime_kind(e),
            Error::Db(e) => db_kind(e),
            Error::Cost(e) => cost_kind(e),
            Error::Llm(e) => llm_kind(e),
            Error::Sandbox(e) => sandbox_kind(e),
            Error::Cache(e) => cache_kind(e),
            Error::Bus(e) => bus_kind(e),
            Error::Temporal(e) => temporal_kind(e),
        }
    }

    /// Whether trying the same operation again may succeed. The layer that raised the error
    /// answers (each has an `is_retryable` with its own knowledge: a contended database
    /// transaction, a provider's 429 or 5xx, an unreachable service); refusals, decisions and
    /// bad input never are.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) => false,
            Error::Runtime(e) => runtime_retryable(e),
            Error::Db(e) => e.is_retryable(),
            Error::Cost(e) => cost_retryable(e),
            Error::Llm(e) => e.is_retryable(),
            Error::Sandbox(e) => e.is_retryable(),
            Error::Cache(e) => e.is_retryable(),
            Error::Bus(e) => e.is_retryable(),
            Error::Temporal(e) => temporal_retryable(e),
        }
    }
}

fn runtime_kind(e: &wflo_runtime::Error) -> ErrorKind {
    use wflo_runtime::Error as E;
    match e {
        E::Definition { .. } | E::NotConfigured(_) => ErrorKind::InvalidInput,
        E::BudgetExceeded { .. } => ErrorKind::BudgetExceeded,
        E::Rejected { .. } => ErrorKind::Rejected,
        E::StaleApproval { .. } | E::AlreadyDecided { .. } | E::InvalidState(_) => {
            ErrorKind::Conflict
        }
        E::Timeout { .. } => ErrorKind::Timeout,
        E::NotFound { .. } => ErrorKind::NotFound,
        E::Db(e) => db_kind(e),
        E::Cost(e) => cost_kind(e),
        E::Llm(e) => llm_kind(e),
        E::Sandbox(e) => sandbox_kind(e),
        E::Cache(e) => cache_kind(e),
        _ => ErrorKind::Internal,
    }
}

/// A layer's error the runtime passes on is that layer's to judge; the runtime answers for its
/// own (refusals and decisions are final).
fn runtime_retryable(e: &wflo_runtime::Error) -> bool {
    use wflo_runtime::Error as E;
    match e {
        E::Db(e) => e.is_retryable(),
        E::Cost(e) => cost_retryable(e),
        E::Llm(e) => e.is_retryable(),
        E::Sandbox(e) => e.is_retryable(),
        E::Cache(e) => e.is_retryable(),
        other => other.is_retryable(),
    }
}

fn db_kind(e: &wflo_db::Error) -> ErrorKind {
    use wflo_db::Error as E;
    if e.is_retryable() {
        return ErrorKind::Conflict;
    }
    match e {
        E::InvalidUrl { .. } | E::ForeignKey { .. } | E::Invalid { .. } => ErrorKind::InvalidInput,
        E::Connect { .. } => ErrorKind::Unavailable,
        E::SchemaTooNew { .. }
        | E::SchemaOutdated { .. }
        | E::AlreadyExists { .. }
        | E::InvalidTransition { .. }
        | E::Leased { .. }
        | E::LeaseLost { .. } => ErrorKind::Conflict,
        E::NotFound { .. } => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    }
}

fn cost_kind(e: &wflo_cost::Error) -> ErrorKind {
    use wflo_cost::Error as E;
    match e {
        E::UnknownModel { .. }
        | E::InvalidCatalogue(_)
        | E::InvalidUsage { .. }
        | E::InvalidConfig { .. }
        | E::InvalidLimit { .. } => ErrorKind::InvalidInput,
        E::BudgetExceeded { .. } => ErrorKind::BudgetExceeded,
        E::UnknownReservation(_) => ErrorKind::NotFound,
        E::ReservationClosed { .. } => ErrorKind::Conflict,
        E::Db(e) => db_kind(e),
        _ => ErrorKind::Internal,
    }
}

/// wflo-cost retries its own contended ledger writes; what still fails with contention may be
/// tried again, the rest (prices, limits, a closed reservation) may not.
fn cost_retryable(e: &wflo_cost::Error) -> bool {
    matches!(e, wflo_cost::Error::Db(db) if db.is_retryable())
}

fn llm_kind(e: &wflo_llm::Error) -> ErrorKind {
    use wflo_llm::Error as E;
    match e {
        E::InvalidRequest(_)
        | E::InvalidConfig(_)
        | E::MissingApiKey { .. }
        | E::UnknownProvider { .. } => ErrorKind::InvalidInput,
        E::Status { status, .. } => match status {
            408 => ErrorKind::Timeout,
            409 => ErrorKind::Conflict,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::Unavailable,
            s if *s >= 500 => ErrorKind::Unavailable,
            s if *s >= 400 => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        },
        E::Timeout { .. } => ErrorKind::Timeout,
        E::Connection { .. } | E::CircuitOpen { .. } | E::Stream { .. } => ErrorKind::Unavailable,
        E::CassetteMiss { .. } => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    }
}

fn sandbox_kind(e: &wflo_sandbox::Error) -> ErrorKind {
    use wflo_sandbox::Error as E;
    match e {
        E::DaemonUnreachable { .. } | E::ShutDown => ErrorKind::Unavailable,
        E::ImageMissing { .. } => ErrorKind::NotFound,
        E::UnknownLanguage { .. }
        | E::InvalidLimit { .. }
        | E::TimeoutTooLong { .. }
        | E::InvalidEnvName { .. }
        | E::InvalidFile { .. }
        | E::InputTooLarge { .. }
        | E::InvalidConfig(_) => ErrorKind::InvalidInput,
        E::TimedOut(_) => ErrorKind::Timeout,
        _ => ErrorKind::Internal,
    }
}

fn cache_kind(e: &wflo_cache::Error) -> ErrorKind {
    use wflo_cache::Error as E;
    match e {
        E::InvalidUrl { .. }
        | E::InvalidConfig { .. }
        | E::Auth { .. }
        | E::InvalidLockOptions(_)
        | E::InvalidName { .. } => ErrorKind::InvalidInput,
        E::Unreachable { .. } | E::ConnectionLost { .. } => ErrorKind::Unavailable,
        E::Timeout { .. } => ErrorKind::Timeout,
        E::LockTimeout { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    }
}

fn bus_kind(e: &wflo_bus::Error) -> ErrorKind {
    use wflo_bus::Error as E;
    match e {
        E::InvalidConfig(_) | E::MessageTooLarge { .. } => ErrorKind::InvalidInput,
        E::UnknownTopic { .. } => ErrorKind::NotFound,
        E::Unreachable { .. } => ErrorKind::Unavailable,
        E::Broker { .. } if e.is_retryable() => ErrorKind::Unavailable,
        E::Db(e) => db_kind(e),
        _ => ErrorKind::Internal,
    }
}

fn temporal_kind(e: &wflo_temporal::Error) -> ErrorKind {
    use wflo_temporal::Error as E;
    match e {
        E::Unreachable { .. } => ErrorKind::Unavailable,
        E::InvalidConfig(_) | E::InvalidRequest(_) | E::Payload { .. } => ErrorKind::InvalidInput,
        E::AlreadyStarted { .. } => ErrorKind::Conflict,
        E::NotFound { .. } => ErrorKind::NotFound,
        E::TimedOut { .. } => ErrorKind::Timeout,
        E::Sandbox(e) => sandbox_kind(e),
        _ => ErrorKind::Internal,
    }
}

/// wflo-temporal has no predicate of its own: an unreachable server may come back; the
/// sandbox's errors are the sandbox's to judge; a workflow's own outcome is final.
fn temporal_retryable(e: &wflo_temporal::Error) -> bool {
    match e {
        wflo_temporal::Error::Unreachable { .. } => true,
        wflo_temporal::Error::Sandbox(e) => e.is_retryable(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn llm_status(status: u16) -> Error {
        Error::Llm(wflo_llm::Error::Status {
            provider: "openai".into(),
            status,
            url: "http://127.0.0.1/v1/chat/completions".into(),
            body: "{}".into(),
            attempts: 1,
            request_id: None,
        })
    }

    #[test]
    fn a_second_decision_is_a_conflict_and_final() {
        let e = Error::Runtime(wflo_runtime::Error::AlreadyDecided {
            approval: uuid::Uuid::nil().into(),
            status: wflo_db::ApprovalStatus::Approved,
            by: "alice".into(),
            at: None,
        });
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(!e.is_retryable());
    }

    #[test]
    fn budget_refusals_are_budget_exceeded_from_either_layer() {
        let d = rust_decimal::Decimal::ONE;
        let runtime = Error::Runtime(wflo_runtime::Error::BudgetExceeded {
            step: "ask".into(),
            scope: "execution:1".into(),
            limit: d,
            spent: d,
            reserved: d,
            requested: d,
        });
        let cost = Error::Cost(wflo_cost::Error::BudgetExceeded {
            scope: "execution:1".into(),
            limit: d,
            spent: d,
            reserved: d,
            requested: d,
        });
        for e in [runtime, cost] {
            assert_eq!(e.kind(), ErrorKind::BudgetExceeded, "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
        let rejected = Error::Runtime(wflo_runtime::Error::Rejected {
            step: "deploy".into(),
            by: "bob".into(),
            reason: None,
        });
        assert_eq!(rejected.kind(), ErrorKind::Rejected);
        assert!(!rejected.is_retryable());
    }

    #[test]
    fn a_missing_row_is_not_found_through_every_layer() {
        let missing = || wflo_db::Error::NotFound {
            entity: "execution",
            id: "42".into(),
        };
        for e in [
            Error::Db(missing()),
            Error::Runtime(wflo_runtime::Error::Db(missing())),
            Error::Cost(wflo_cost::Error::Db(missing())),
        ] {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
    }

    /// A real contention: a second writer on a SQLite file whose write lock another
    /// transaction holds gets `database is locked` (SQLITE_BUSY), which wflo-db calls retryable.
    #[tokio::test]
    async fn database_contention_is_retryable() {
        use wflo_db::Executor as _;
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("contended.db").display()
        );
        let config = wflo_db::DbConfig::builder(url).build().unwrap();
        let db = wflo_db::Db::connect(&config).await.unwrap();
        let tx = db.begin().await.unwrap();
        tx.definitions()
            .create(wflo_db::NewDefinition::new("held", serde_json::json!({})))
            .await
            .unwrap();
        // The second writer gives up after the busy timeout.
        let err = db
            .begin()
            .await
            .map(|_| ())
            .expect_err("the write lock is held");
        tx.rollback().await.unwrap();
        let e = Error::Db(err);
        assert!(e.is_retryable(), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e:?}");
        let wrapped = Error::Runtime(wflo_runtime::Error::Db(match e {
            Error::Db(e) => e,
            _ => unreachable!(),
        }));
        assert!(wrapped.is_retryable());
    }

    #[test]
    fn a_refused_key_is_final_and_an_overloaded_provider_is_not() {
        let unauthorized = llm_status(401);
        assert_eq!(unauthorized.kind(), ErrorKind::InvalidInput);
        assert!(!unauthorized.is_retryable());

        let unavailable = llm_status(503);
        assert_eq!(unavailable.kind(), ErrorKind::Unavailable);
        assert!(unavailable.is_retryable());

        assert!(llm_status(429).is_retryable());
        assert_eq!(llm_status(404).kind(), ErrorKind::NotFound);
        let timeout = Error::Llm(wflo_llm::Error::Timeout {
            provider: "openai".into(),
            attempts: 3,
            timeout: std::time::Duration::from_secs(1),
        });
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        assert!(timeout.is_retryable());
    }

    #[test]
    fn services_out_of_reach_are_unavailable_and_retryable() {
        let sandbox = Error::Sandbox(wflo_sandbox::Error::DaemonUnreachable {
            socket: "unix:///var/run/docker.sock".into(),
            reason: "refused".into(),
        });
        let cache = Error::Cache(wflo_cache::Error::ConnectionLost {
            command: "GET",
            reason: "reset".into(),
        });
        for e in [sandbox, cache] {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.is_retryable(), "{e}");
        }
        let bad = Error::Sandbox(wflo_sandbox::Error::UnknownLanguage {
            name: "cobol".into(),
        });
        assert_eq!(bad.kind(), ErrorKind::InvalidInput);
        assert!(!bad.is_retryable());
        assert_eq!(Error::Config("x".into()).kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn the_layer_error_is_the_source_and_its_message_is_kept() {
        let inner = wflo_db::Error::NotFound {
            entity: "approval",
            id: "7".into(),
        };
        let text = inner.to_string();
        let e = Error::from(inner);
        assert_eq!(e.to_string(), text);
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<wflo_db::Error>().is_some());
        assert_eq!(ErrorKind::BudgetExceeded.to_string(), "budget_exceeded");
    }
}
