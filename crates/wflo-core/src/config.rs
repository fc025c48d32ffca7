//! Configuration: the only place Wflo reads environment variables.

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://wflo.db?mode=rwc";

/// Which LLM provider to use and how to reach it.
#[derive(Clone, Default)]
pub struct LlmSettings {
    /// `openai`, `anthropic` or `replay`; chosen from the keys when unset.
    pub provider: Option<String>,
    /// OpenAI (or compatible) key.
    pub openai_api_key: Option<String>,
    /// OpenAI-compatible base URL (vLLM, Ollama, gateways).
    pub openai_base_url: Option<String>,
    /// Anthropic key.
    pub anthropic_api_key: Option<String>,
    /// Anthropic base URL.
    pub anthropic_base_url: Option<String>,
    /// A replay cassette: answers come from it, offline.
    pub cassette: Option<PathBuf>,
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<String>| k.as_ref().map(|_| "[redacted]");
        f.debug_struct("LlmSettings")
            .field("provider", &self.provider)
            .field("openai_api_key", &key(&self.openai_api_key))
            .field("openai_base_url", &self.openai_base_url)
            .field("anthropic_api_key", &key(&self.anthropic_api_key))
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field("cassette", &self.cassette)
            .finish()
    }
}

/// An API token, kept out of `Debug` output.
#[derive(Clone)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Everything Wflo connects to. Build it with [`Config::builder`] or read it with
/// [`Config::from_env`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) database_url: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_ca_file: Option<PathBuf>,
    pub(crate) kafka_bootstrap: Option<String>,
    pub(crate) temporal_address: Option<String>,
    pub(crate) temporal_namespace: String,
    pub(crate) temporal_task_queue: String,
    pub(crate) sandbox_image: Option<String>,
    pub(crate) docker_socket: Option<String>,
    pub(crate) prices_file: Option<PathBuf>,
    pub(crate) llm: LlmSettings,
    pub(crate) lease_ttl: Option<std::time::Duration>,
    pub(crate) driver_name: Option<String>,
    pub(crate) server: Option<(String, Token)>,
}

impl Config {
    /// A builder with the embedded defaults (SQLite file, no optional service).
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config {
            database_url: DEFAULT_DATABASE_URL.into(),
            redis_url: None,
            redis_ca_file: None,
            kafka_bootstrap: None,
            temporal_address: None,
            temporal_namespace: "default".into(),
            temporal_task_queue: "wflo-tasks".into(),
            sandbox_image: None,
            docker_socket: None,
            prices_file: None,
            llm: LlmSettings::default(),
            lease_ttl: None,
            driver_name: None,
            server: None,
        })
    }

    /// This configuration with the lease holder name of its runs (see
    /// [`ConfigBuilder::driver_name`]).
    pub fn with_driver_name(mut self, name: impl Into<String>) -> Config {
        self.driver_name = Some(name.into());
        self
    }

    /// Reads the process environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `DATABASE_URL` | PostgreSQL or SQLite URL | `sqlite://wflo.db?mode=rwc` |
    /// | `REDIS_URL` | Redis for the response cache | in-process cache |
    /// | `REDIS_CA_FILE` | PEM CA certificate(s) trusted for a `rediss://` server, besides the system's | system roots |
    /// | `KAFKA_BOOTSTRAP_SERVERS` | brokers for the outbox relay | events stay in the outbox |
    /// | `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TASK_QUEUE` | durable engine | in-process engine; `default`; `wflo-tasks` |
    /// | `WFLO_SANDBOX_IMAGE`, `DOCKER_HOST` | sandbox image and engine socket | `wflo-sandbox-python:3.11`; the local socket |
    /// | `WFLO_PRICES_FILE` | TOML prices overriding or adding to the catalogue | embedded catalogue |
    /// | `WFLO_LLM_PROVIDER` | `openai`, `anthropic` or `replay` | from the keys set |
    /// | `OPENAI_API_KEY`, `OPENAI_BASE_URL` | OpenAI-compatible provider | |
    /// | `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL` | Anthropic provider | |
    /// | `WFLO_LLM_CASSETTE` | replay cassette (offline answers) | |
    /// | `WFLO_LEASE_TTL_SECS` | how long a driver's lease on an execution lasts unless renewed | 30 |
    /// | `WFLO_SERVER_URL`, `WFLO_TOKEN` | a `wflo serve` instance and an API token: the command line talks to it instead of the database | the database |
    pub fn from_env() -> Result<Config> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Like [`Config::from_env`], from a map (tests, or another source of settings).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Config> {
        let get = |k: &str| vars.get(k).filter(|v| !v.trim().is_empty()).cloned();
        let mut b = Config::builder();
        if let Some(v) = get("DATABASE_URL") {
            b = b.database_url(v);
        }
        b.0.redis_url = get("REDIS_URL");
        b.0.redis_ca_file = get("REDIS_CA_FILE").map(PathBuf::from);
        b.0.kafka_bootstrap = get("KAFKA_BOOTSTRAP_SERVERS");
        b.0.temporal_address = get("TEMPORAL_ADDRESS");
        if let Some(v) = get("TEMPORAL_NAMESPACE") {
            b.0.temporal_namespace = v;
        }
        if let Some(v) = get("TEMPORAL_TASK_QUEUE") {
            b.0.temporal_task_queue = v;
        }
        b.0.sandbox_image = get("WFLO_SANDBOX_IMAGE");
        b.0.docker_socket = get("DOCKER_HOST");
        b.0.prices_file = get("WFLO_PRICES_FILE").map(PathBuf::from);
        b.0.llm = LlmSettings {
            provider: get("WFLO_LLM_PROVIDER"),
            openai_api_key: get("OPENAI_API_KEY"),
            openai_base_url: get("OPENAI_BASE_URL"),
            anthropic_api_key: get("ANTHROPIC_API_KEY"),
            anthropic_base_url: get("ANTHROPIC_BASE_URL"),
            cassette: get("WFLO_LLM_CASSETTE").map(PathBuf::from),
        };
        if let Some(v) = get("WFLO_LEASE_TTL_SECS") {
            let secs: u64 = v.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "WFLO_LEASE_TTL_SECS=`{v}` is not a whole number of seconds; use e.g. 30"
                ))
            })?;
            b = b.lease_ttl(std::time::Duration::from_secs(secs));
        }
        match (get("WFLO_SERVER_URL"), get("WFLO_TOKEN")) {
            (Some(url), Some(token)) => b = b.server(url, token),
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Config(
                    "WFLO_SERVER_URL is set but WFLO_TOKEN is not; set it to an API token \
                     (`wflo tokens create` on the server's database)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "WFLO_TOKEN is set but WFLO_SERVER_URL is not; set it to the server, e.g. \
                     http://127.0.0.1:8080"
                        .into(),
                ));
            }
        }
        b.build()
    }

    /// How long a driver's lease lasts unless renewed (`WFLO_LEASE_TTL_SECS`; none: the
    /// engine's default, 30 s).
    pub fn lease_ttl(&self) -> Option<std::time::Duration> {
        self.lease_ttl
    }

    /// The `wflo serve` instance and API token to talk to instead of the database
    /// (`WFLO_SERVER_URL`, `WFLO_TOKEN`), when set.
    pub fn server(&self) -> Option<(&str, &str)> {
        self.server
            .as_ref()
            .map(|(u, t)| (u.as_str(), t.0.as_str()))
    }

    /// The database URL (password included; use [`crate::db::redact`] to show it).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }
    /// Redis, if configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }
    /// Kafka bootstrap servers, if configured.
    pub fn kafka_bootstrap(&self) -> Option<&str> {
        self.kafka_bootstrap.as_deref()
    }
    /// The Temporal frontend, if configured.
    pub fn temporal_address(&self) -> Option<&str> {
        self.temporal_address.as_deref()
    }
    /// Temporal namespace.
    pub fn temporal_namespace(&self) -> &str {
        &self.temporal_namespace
    }
    /// Temporal task queue.
    pub fn temporal_task_queue(&self) -> &str {
        &self.temporal_task_queue
    }
    /// LLM settings.
    pub fn llm(&self) -> &LlmSettings {
        &self.llm
    }
    /// The prices file read over the embedded catalogue, if configured.
    pub fn prices_file(&self) -> Option<&std::path::Path> {
        self.prices_file.as_deref()
    }
    /// The Docker socket the sandbox uses.
    pub fn docker_socket(&self) -> String {
        self.docker_socket
            .clone()
            .unwrap_or_else(|| wflo_sandbox::DEFAULT_DOCKER_SOCKET.to_string())
    }

    pub(crate) fn db_config(&self) -> Result<wflo_db::DbConfig> {
        Ok(wflo_db::DbConfig::builder(self.database_url.clone()).build()?)
    }

    pub(crate) fn price_catalog(&self) -> Result<wflo_cost::PriceCatalog> {
        match &self.prices_file {
            None => Ok(wflo_cost::PriceCatalog::embedded().clone()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read WFLO_PRICES_FILE {}: {e}",
                        path.display()
                    ))
                })?;
                Ok(wflo_cost::PriceCatalog::builder().toml(text).build()?)
            }
        }
    }

    /// The Temporal settings (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TASK_QUEUE`),
    /// or `None` when no address is configured (runs use the in-process engine).
    pub fn temporal_config(&self) -> Result<Option<wflo_temporal::TemporalConfig>> {
        let Some(address) = &self.temporal_address else {
            return Ok(None);
        };
        Ok(Some(
            wflo_temporal::TemporalConfig::builder()
                .address(address.clone())
                .namespace(self.temporal_namespace.clone())
                .task_queue(self.temporal_task_queue.clone())
                .build()?,
        ))
    }

    /// The sandbox settings code steps run with.
    pub fn sandbox(&self) -> Result<wflo_sandbox::SandboxConfig> {
        self.sandbox_config()
    }

    /// The Redis client configuration, `None` when `REDIS_URL` is not set; reads the
    /// `REDIS_CA_FILE` certificates.
    pub fn redis_config(&self) -> Result<Option<crate::cache::RedisConfig>> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let mut b = wflo_cache::RedisConfig::builder(url.clone());
        if let Some(path) = &self.redis_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read REDIS_CA_FILE {}: {e}; point it at a PEM file with the CA \
                     certificate",
                    path.display()
                ))
            })?;
            b = b.tls_root_certificates_pem(pem);
        }
        Ok(Some(b.build()?))
    }

    pub(crate) fn sandbox_config(&self) -> Result<wflo_sandbox::SandboxConfig> {
        let mut b = wflo_sandbox::SandboxConfig::builder();
        if let Some(image) = &self.sandbox_image {
            b = b.image(image.clone());
        }
        if let Some(socket) = &self.docker_socket {
            b = b.docker_socket(socket.clone());
        }
        Ok(b.build()?)
    }

    /// The configured provider: `WFLO_LLM_PROVIDER`, else replay when a cassette is set, else
    /// OpenAI or Anthropic by which key is set; `None` when nothing is configured.
    pub(crate) fn llm_provider(&self) -> Result<Option<Arc<dyn wflo_llm::LlmProvider>>> {
        let s = &self.llm;
        let name = match (
            &s.provider,
            &s.cassette,
            &s.openai_api_key,
            &s.anthropic_api_key,
        ) {
            (Some(p), _, _, _) => p.clone(),
            (None, Some(_), _, _) => "replay".into(),
            (None, None, Some(_), _) => "openai".into(),
            (None, None, None, Some(_)) => "anthropic".into(),
            _ => return Ok(None),
        };
        let mut b = wflo_llm::ProviderConfig::builder();
        match name.as_str() {
            "openai" => {
                b = b.maybe_api_key(s.openai_api_key.clone());
                if let Some(u) = &s.openai_base_url {
                    b = b.base_url(u)?;
                }
            }
            "anthropic" => {
                b = b.maybe_api_key(s.anthropic_api_key.clone());
                if let Some(u) = &s.anthropic_base_url {
                    b = b.base_url(u)?;
                }
            }
            "replay" => {
                let path = s.cassette.clone().ok_or_else(|| {
                    Error::Config(
                        "the replay provider needs WFLO_LLM_CASSETTE (a cassette file)".into(),
                    )
                })?;
                b = b.cassette(path);
            }
            _ => {}
        }
        Ok(Some(wflo_llm::create_provider(&name, &b.build()?)?))
    }
}

/// Builder of [`Config`].
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

impl ConfigBuilder {
    /// The database (`postgres://...`, `sqlite://file?mode=rwc`, `sqlite::memory:`).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.0.database_url = url.into();
        self
    }
    /// Redis for the response cache.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.0.redis_url = Some(url.into());
        self
    }
    /// A PEM file with the CA certificate(s) to trust for a `rediss://` Redis, besides the
    /// system's roots.
    pub fn redis_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.redis_ca_file = Some(path.into());
        self
    }
    /// Kafka bootstrap servers for the relay.
    pub fn kafka_bootstrap(mut self, servers: impl Into<String>) -> Self {
        self.0.kafka_bootstrap = Some(servers.into());
        self
    }
    /// The Temporal frontend.
    pub fn temporal_address(mut self, addr: impl Into<String>) -> Self {
        self.0.temporal_address = Some(addr.into());
        self
    }
    /// The sandbox image.
    pub fn sandbox_image(mut self, image: impl Into<String>) -> Self {
        self.0.sandbox_image = Some(image.into());
        self
    }
    /// The Temporal namespace (default `default`).
    pub fn temporal_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.0.temporal_namespace = namespace.into();
        self
    }
    /// The Temporal task queue (default `wflo-tasks`).
    pub fn temporal_task_queue(mut self, queue: impl Into<String>) -> Self {
        self.0.temporal_task_queue = queue.into();
        self
    }
    /// The Docker engine socket the sandbox uses (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`; default the local socket).
    pub fn docker_socket(mut self, socket: impl Into<String>) -> Self {
        self.0.docker_socket = Some(socket.into());
        self
    }
    /// A TOML prices file overriding or adding to the embedded catalogue (read when Wflo
    /// connects).
    pub fn prices_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.prices_file = Some(path.into());
        self
    }
    /// LLM settings.
    pub fn llm(mut self, llm: LlmSettings) -> Self {
        self.0.llm = llm;
        self
    }
    /// How long a driver's lease on an execution lasts unless renewed (default 30 s): a run
    /// whose process died is recognised, and its reservations released, after this long.
    pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.0.lease_ttl = Some(ttl);
        self
    }
    /// The name this process's runs hold their executions' leases under (default: host and
    /// process id). `wflo serve` names its instances `serve@host:pid:…`, so another instance
    /// knows which abandoned runs to take over.
    pub fn driver_name(mut self, name: impl Into<String>) -> Self {
        self.0.driver_name = Some(name.into());
        self
    }
    /// Talk to the `wflo serve` instance at `url` with API token `token` instead of the
    /// database (the command line's client mode).
    pub fn server(mut self, url: impl Into<String>, token: impl Into<String>) -> Self {
        self.0.server = Some((url.into(), Token(token.into())));
        self
    }
    /// Validates.
    pub fn build(self) -> Result<Config> {
        if let Some((url, _)) = &self.0.server
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "WFLO_SERVER_URL `{url}` is not an http(s) URL; write it as http://host:port"
            )));
        }
        wflo_db::DbConfig::builder(self.0.database_url.clone()).build()?;
        if let Some(p) = &self.0.llm.provider
            && !["openai", "anthropic", "replay"].contains(&p.as_str())
        {
            return Err(Error::Config(format!(
                "unknown LLM provider `{p}` in WFLO_LLM_PROVIDER; use openai, anthropic or replay"
            )));
        }
        if let Some(url) = &self.0.redis_url {
            wflo_cache::RedisConfig::builder(url.clone()).build()?;
        }
        if self.0.redis_ca_file.is_some() && self.0.redis_url.is_none() {
            return Err(Error::Config(
                "REDIS_CA_FILE is set but REDIS_URL is not; set REDIS_URL to the rediss:// server \
                 or unset REDIS_CA_FILE"
                    .into(),
            ));
        }
        if self
            .0
            .lease_ttl
            .is_some_and(|t| t < std::time::Duration::from_secs(1))
        {
            return Err(Error::Config(
                "a driver's lease must last at least 1 second (WFLO_LEASE_TTL_SECS)".into(),
            ));
        }
        if self.0.temporal_namespace.is_empty() || self.0.temporal_task_queue.is_empty() {
            return Err(Error::Config(
                "the Temporal namespace and task queue must not be empty".into(),
            ));
        }
        Ok(self.0)
    }
}

impl crate::LogConfig {
    /// Reads `WFLO_LOG` (else `default_filter`) and `WFLO_LOG_FORMAT` from the process
    /// environment (see [`crate::LogConfig::from_vars`]).
    pub fn from_env(default_filter: &str) -> Result<crate::LogConfig> {
        Self::from_vars(&std::env::vars().collect(), default_filter)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A variables map of `pairs`.
    pub(crate) fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(c.database_url(), DEFAULT_DATABASE_URL);
        assert!(
            c.redis_url().is_none()
                && c.kafka_bootstrap().is_none()
                && c.temporal_address().is_none()
        );
        assert_eq!(
            (c.temporal_namespace(), c.temporal_task_queue()),
            ("default", "wflo-tasks")
        );
        assert!(c.llm_provider().unwrap().is_none());
    }

    #[test]
    fn reads_services_and_keys_and_redacts_them() {
        let c = Config::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u:p@127.0.0.1/wflo"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("OPENAI_API_KEY", "sk-secret-123"),
        ]))
        .unwrap();
        assert_eq!(c.redis_url(), Some("redis://127.0.0.1:6379"));
        assert!(!format!("{c:?}").contains("sk-secret-123"));
        assert_eq!(c.llm_provider().unwrap().unwrap().name(), "openai");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::from_vars(vars(&[("DATABASE_URL", "mysql://x")])).is_err());
        let e = Config::from_vars(vars(&[("WFLO_LLM_PROVIDER", "gemini")])).unwrap_err();
        assert!(
            e.to_string().contains("unknown LLM provider `gemini`"),
            "{e}"
        );
        let e = Config::from_vars(vars(&[("WFLO_LLM_PROVIDER", "openai")]))
            .unwrap()
            .llm_provider()
            .expect_err("a missing key is an error");
        assert!(e.to_string().contains("OPENAI_API_KEY"), "{e}");
    }

    #[test]
    fn a_redis_ca_file_is_read_and_checked() {
        let e = Config::from_vars(vars(&[("REDIS_CA_FILE", "/tmp/ca.pem")])).unwrap_err();
        assert!(e.to_string().contains("REDIS_URL is not"), "{e}");
        let e = Config::from_vars(vars(&[("REDIS_URL", "http://127.0.0.1:6379")])).unwrap_err();
        assert!(e.to_string().contains("redis"), "{e}");

        let missing = Config::from_vars(vars(&[
            ("REDIS_URL", "rediss://127.0.0.1:6380"),
            ("REDIS_CA_FILE", "/nonexistent/wflo-ca.pem"),
        ]))
        .unwrap();
        let e = missing.redis_config().unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read REDIS_CA_FILE /nonexistent/wflo-ca.pem"),
            "{e}"
        );

        // A file without a certificate is refused by the cache's own check.
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let c = Config::builder()
            .redis_url("rediss://127.0.0.1:6380")
            .redis_ca_file(&not_pem)
            .build()
            .unwrap();
        let e = c.redis_config().unwrap_err();
        assert!(e.to_string().contains("CERTIFICATE"), "{e}");

        assert!(
            Config::from_vars(HashMap::new())
                .unwrap()
                .redis_config()
                .unwrap()
                .is_none()
        );
    }
}
