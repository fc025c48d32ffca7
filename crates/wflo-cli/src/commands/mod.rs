//! One module per subcommand, and the connection every command shares.

pub(crate) mod approvals;
pub(crate) mod cost;
pub(crate) mod doctor;
pub(crate) mod executions;
pub(crate) mod migrate;
pub(crate) mod relay;
pub(crate) mod remote;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod tokens;
pub(crate) mod webhooks;
pub(crate) mod worker;

use anyhow::Context;
use std::sync::Arc;
use wflo_core::sandbox::SandboxConfig;
use wflo_core::{Config, EngineBuilder, Wflo};

/// The configuration, from the environment (the only place Wflo reads it).
pub(crate) fn config() -> anyhow::Result<Config> {
    Config::from_env().context("the configuration in the environment is not usable")
}

/// The sandbox as a one-shot command uses it: no warm pool (its containers would outlive the
/// process) and containers removed before a code step returns.
pub(crate) fn sandbox_config(config: &Config) -> anyhow::Result<SandboxConfig> {
    Ok(SandboxConfig::builder()
        .image(config.sandbox_image())
        .docker_socket(config.docker_socket())
        .pool_size(0)
        .prewarm(false)
        .remove_in_background(false)
        .build()?)
}

/// Connects what the configuration names (the database is migrated on connect).
pub(crate) async fn connect(config: Config) -> anyhow::Result<Wflo> {
    connect_with(config, |b| b).await
}

/// Like [`connect`], letting the caller add to the engine.
pub(crate) async fn connect_with(
    config: Config,
    customize: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> anyhow::Result<Wflo> {
    let sandbox = sandbox_config(&config)?;
    let url = wflo_core::db::redact(config.database_url());
    reachable(&config)
        .await
        .with_context(|| format!("cannot start wflo on the database {url}"))?;
    Wflo::connect_with(config, |b| customize(b.sandbox(sandbox)))
        .await
        .with_context(|| format!("cannot start wflo on the database {url}"))
}

/// A database server that does not answer is reported within seconds (the facade's pool would
/// keep retrying for its whole acquire timeout). SQLite files need no check.
async fn reachable(config: &Config) -> Result<(), wflo_core::db::Error> {
    use wflo_core::db::{Backend, Db, DbConfig, Error};
    if Backend::from_url(config.database_url())? != Backend::Postgres {
        return Ok(());
    }
    let quick = DbConfig::builder(config.database_url())
        .max_connections(1)
        .connect_timeout(std::time::Duration::from_secs(5))
        .acquire_timeout(std::time::Duration::from_secs(5))
        .auto_migrate(false)
        .build()?;
    match Db::connect(&quick).await {
        Ok(db) => db.close().await,
        // Only an unreachable server matters here; the real connection reports the rest.
        Err(e @ Error::Connect { .. }) => Err(e),
        Err(_) => Ok(()),
    }
}

/// A replay cassette that records the live provider's answers (`wflo run --record-cassette`).
pub(crate) fn recorder(
    config: &Config,
    path: &std::path::Path,
) -> anyhow::Result<Arc<dyn wflo_core::llm::LlmProvider>> {
    use wflo_core::llm::{ProviderConfig, ReplayProvider, create_provider};
    let s = config.llm();
    let (name, key, base) = match (&s.openai_api_key, &s.anthropic_api_key) {
        (Some(k), _) if s.provider.as_deref() != Some("anthropic") => {
            ("openai", k.clone(), s.openai_base_url.clone())
        }
        (_, Some(k)) => ("anthropic", k.clone(), s.anthropic_base_url.clone()),
        _ => {
            return Err(crate::exit::coded(
                crate::exit::USAGE,
                "--record-cassette records a live provider: set OPENAI_API_KEY or ANTHROPIC_API_KEY \
                 (and OPENAI_BASE_URL for a compatible server)",
            ));
        }
    };
    let mut b = ProviderConfig::builder().api_key(key);
    if let Some(u) = base {
        b = b.base_url(&u)?;
    }
    let live = create_provider(name, &b.build()?)?;
    Ok(Arc::new(ReplayProvider::record(live, path)?))
}

/// A Temporal worker long-polls its task queue and asks again at least every minute (the
/// server's long-poll timeout); a poller last seen longer ago than this has stopped.
pub(crate) const POLLER_FRESH: std::time::Duration = std::time::Duration::from_secs(75);

/// The pollers seen within [`POLLER_FRESH`], with how long ago each last polled (none: the
/// server gave no time).
pub(crate) fn live_pollers(
    pollers: &[wflo_core::temporal::Poller],
) -> Vec<(&wflo_core::temporal::Poller, Option<std::time::Duration>)> {
    let now = std::time::SystemTime::now();
    pollers
        .iter()
        .map(|p| (p, p.last_access.and_then(|t| now.duration_since(t).ok())))
        .filter(|(_, age)| age.is_none_or(|a| a <= POLLER_FRESH))
        .collect()
}
