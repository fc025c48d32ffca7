//! Exit codes and error reports a person can act on.

use wflo_core::RuntimeError;

/// The run failed, or the operation was refused.
pub(crate) const FAILED: u8 = 1;
/// Usage or configuration error.
pub(crate) const USAGE: u8 = 2;
/// A budget stopped a call before it was made.
pub(crate) const BUDGET: u8 = 3;
/// A service is unreachable.
pub(crate) const UNREACHABLE: u8 = 4;

/// An error with a chosen exit code.
#[derive(Debug)]
pub(crate) struct Coded {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An error with exit code `code`.
pub(crate) fn coded(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// Prints `error: ...` and the chain of causes, without a backtrace.
pub(crate) fn report(e: &anyhow::Error) {
    eprintln!("error: {e}");
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        // `transparent` wrappers repeat their source's text; print each message once.
        if text != last && !last.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        last = text;
    }
}

/// The exit code of an error: the first cause in the chain that says something decides.
pub(crate) fn classify(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::Error>() {
            return core_code(c);
        }
        if let Some(c) = cause.downcast_ref::<RuntimeError>() {
            return runtime_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::db::Error>() {
            return db_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::cost::Error>() {
            return cost_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::llm::Error>() {
            return llm_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::sandbox::Error>() {
            return sandbox_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::cache::Error>() {
            return cache_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::bus::Error>() {
            return bus_code(c);
        }
        if let Some(c) = cause.downcast_ref::<wflo_core::temporal::Error>() {
            return temporal_code(c);
        }
        if cause.downcast_ref::<clap::Error>().is_some() {
            return USAGE;
        }
    }
    FAILED
}

fn core_code(e: &wflo_core::Error) -> u8 {
    use wflo_core::Error as E;
    match e {
        E::Config(_) => USAGE,
        E::Runtime(r) => runtime_code(r),
        E::Db(d) => db_code(d),
        E::Cost(c) => cost_code(c),
        E::Llm(l) => llm_code(l),
        E::Sandbox(s) => sandbox_code(s),
        E::Cache(c) => cache_code(c),
        E::Bus(b) => bus_code(b),
        E::Temporal(t) => temporal_code(t),
        _ => FAILED,
    }
}

/// A Temporal run's failure carries the step's error as text: a budget refusal is still
/// exit code 3.
pub(crate) fn temporal_code(e: &wflo_core::temporal::Error) -> u8 {
    use wflo_core::temporal::Error as E;
    match e {
        E::Unreachable { .. } => UNREACHABLE,
        E::InvalidConfig(_) | E::InvalidRequest(_) | E::NotFound { .. } => USAGE,
        E::WorkflowFailed { message, .. }
            if message.contains("budget `") && message.contains("exceeded") =>
        {
            BUDGET
        }
        _ => FAILED,
    }
}

pub(crate) fn runtime_code(e: &RuntimeError) -> u8 {
    use RuntimeError as E;
    match e {
        E::BudgetExceeded { .. } => BUDGET,
        E::Definition { .. } | E::NotConfigured(_) | E::NotFound { .. } => USAGE,
        E::Db(d) => db_code(d),
        E::Cost(c) => cost_code(c),
        E::Llm(l) => llm_code(l),
        E::Sandbox(s) => sandbox_code(s),
        E::Cache(c) => cache_code(c),
        _ => FAILED,
    }
}

fn db_code(e: &wflo_core::db::Error) -> u8 {
    use wflo_core::db::Error as E;
    match e {
        E::Connect { .. } => UNREACHABLE,
        E::InvalidUrl { .. }
        | E::NotFound { .. }
        | E::SchemaTooNew { .. }
        | E::SchemaOutdated { .. } => USAGE,
        _ => FAILED,
    }
}

fn cost_code(e: &wflo_core::cost::Error) -> u8 {
    use wflo_core::cost::Error as E;
    match e {
        E::BudgetExceeded { .. } => BUDGET,
        E::UnknownModel { .. }
        | E::InvalidCatalogue(_)
        | E::InvalidConfig { .. }
        | E::InvalidLimit { .. } => USAGE,
        E::Db(d) => db_code(d),
        _ => FAILED,
    }
}

fn llm_code(e: &wflo_core::llm::Error) -> u8 {
    use wflo_core::llm::Error as E;
    match e {
        E::Connection { .. } => UNREACHABLE,
        E::InvalidConfig(_)
        | E::MissingApiKey { .. }
        | E::UnknownProvider { .. }
        | E::Cassette { .. } => USAGE,
        _ => FAILED,
    }
}

fn sandbox_code(e: &wflo_core::sandbox::Error) -> u8 {
    use wflo_core::sandbox::Error as E;
    match e {
        E::DaemonUnreachable { .. } | E::ImageMissing { .. } => UNREACHABLE,
        E::InvalidConfig(_) => USAGE,
        _ => FAILED,
    }
}

fn cache_code(e: &wflo_core::cache::Error) -> u8 {
    use wflo_core::cache::Error as E;
    match e {
        E::Unreachable { .. } | E::ConnectionLost { .. } | E::Timeout { .. } | E::Auth { .. } => {
            UNREACHABLE
        }
        E::InvalidUrl { .. } | E::InvalidConfig { .. } => USAGE,
        _ => FAILED,
    }
}

fn bus_code(e: &wflo_core::bus::Error) -> u8 {
    use wflo_core::bus::Error as E;
    match e {
        E::Unreachable { .. } => UNREACHABLE,
        E::InvalidConfig(_) => USAGE,
        E::Db(d) => db_code(d),
        _ => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn budget_refusals_are_exit_3_even_when_wrapped() {
        let e = RuntimeError::BudgetExceeded {
            step: "plan".into(),
            scope: "execution:x".into(),
            limit: Decimal::new(1, 7),
            spent: Decimal::ZERO,
            reserved: Decimal::ZERO,
            requested: Decimal::new(2, 4),
        };
        let wrapped = anyhow::Error::new(wflo_core::Error::Runtime(e)).context("running x");
        assert_eq!(classify(&wrapped), BUDGET);
    }

    #[test]
    fn definitions_unknown_rows_and_settings_are_usage_errors() {
        let def = RuntimeError::Definition {
            step: Some("a".into()),
            line: Some(3),
            message: "dependency cycle: a -> b -> a".into(),
        };
        assert_eq!(classify(&anyhow::Error::new(def)), USAGE);
        let missing = RuntimeError::Db(wflo_core::db::Error::NotFound {
            entity: "approval request",
            id: "x".into(),
        });
        assert_eq!(classify(&anyhow::Error::new(missing)), USAGE);
        let config = wflo_core::Error::Config("no".into());
        assert_eq!(classify(&anyhow::Error::new(config)), USAGE);
    }

    #[test]
    fn unreachable_services_are_exit_4() {
        let e = wflo_core::Error::Db(wflo_core::db::Error::Connect {
            url: "postgres://127.0.0.1:1/x".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(classify(&anyhow::Error::new(e)), UNREACHABLE);
    }

    #[test]
    fn failures_and_chosen_codes() {
        let e = RuntimeError::Rejected {
            step: "gate".into(),
            by: "ana".into(),
            reason: None,
        };
        assert_eq!(classify(&anyhow::Error::new(e)), FAILED);
        assert_eq!(classify(&coded(USAGE, "x").context("y")), USAGE);
        assert_eq!(classify(&anyhow::anyhow!("plain")), FAILED);
    }
}
