//! Logs: what the runtime says while it works, as text or JSON lines on standard error,
//! filtered with env-filter syntax. Each line carries the spans it happened in: `wflo.run`
//! (execution id, workflow, driver, budget) and `wflo.step` (step, kind, attempt, memoized).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `WFLO_LOG` | what to log, in env-filter syntax (`info`, `wflo_runtime=debug,warn`) | the caller's |
//! | `WFLO_LOG_FORMAT` | `text` or `json` (one object per line) | `text` |

use crate::{Error, Result};
use std::collections::HashMap;
use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span's fields and the list of spans.
    Json,
}

/// What to log and how. Built with [`LogConfig::new`] or read by [`LogConfig::from_env`].
#[derive(Debug, Clone)]
pub struct LogConfig {
    filter: String,
    format: LogFormat,
}

impl LogConfig {
    /// Logs what `filter` (env-filter syntax) lets through, in `format`; an invalid filter is
    /// an error that names it.
    pub fn new(filter: impl Into<String>, format: LogFormat) -> Result<LogConfig> {
        let filter = filter.into();
        tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
            Error::Config(format!(
                "WFLO_LOG=`{filter}` is not a log filter ({e}); write e.g. info or wflo_runtime=debug,warn"
            ))
        })?;
        Ok(LogConfig { filter, format })
    }

    /// Reads `WFLO_LOG` (else `default_filter`) and `WFLO_LOG_FORMAT` from a map (the
    /// process environment: [`LogConfig::from_env`], read by the config loader).
    pub fn from_vars(vars: &HashMap<String, String>, default_filter: &str) -> Result<LogConfig> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let format = match get("WFLO_LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(Error::Config(format!(
                    "WFLO_LOG_FORMAT=`{other}` is not a log format; use text or json"
                )));
            }
        };
        LogConfig::new(get("WFLO_LOG").unwrap_or(default_filter), format)
    }

    /// The filter, in env-filter syntax.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Installs this as the process's log subscriber, writing to standard error. Fails when
    /// one is installed already.
    pub fn init(&self) -> Result<()> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map_err(|e| Error::Config(format!("invalid log filter: {e}")))?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let installed = match self.format {
            LogFormat::Text => builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init(),
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .try_init(),
        };
        installed.map_err(|e| {
            Error::Config(format!(
                "cannot install the log subscriber ({e}); install one per process"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::vars;

    #[test]
    fn the_variables_choose_the_filter_and_format() {
        let c = LogConfig::from_vars(&vars(&[]), "warn").unwrap();
        assert_eq!((c.filter(), c.format()), ("warn", LogFormat::Text));
        let c = LogConfig::from_vars(
            &vars(&[
                ("WFLO_LOG", "wflo_runtime=debug,info"),
                ("WFLO_LOG_FORMAT", "JSON"),
            ]),
            "warn",
        )
        .unwrap();
        assert_eq!(
            (c.filter(), c.format()),
            ("wflo_runtime=debug,info", LogFormat::Json)
        );
    }

    #[test]
    fn a_bad_filter_or_format_is_an_error_that_says_what_to_write() {
        let e = LogConfig::from_vars(&vars(&[("WFLO_LOG_FORMAT", "xml")]), "warn").unwrap_err();
        assert!(e.to_string().contains("use text or json"), "{e}");
        let e = LogConfig::from_vars(&vars(&[("WFLO_LOG", "wflo=loud")]), "warn").unwrap_err();
        assert!(e.to_string().contains("WFLO_LOG=`wflo=loud`"), "{e}");
    }
}
