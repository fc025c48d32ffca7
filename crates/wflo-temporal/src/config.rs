//! [`TemporalConfig`]: where the server is, which namespace and task queue, and the worker's
//! concurrency limits and retry policy.

use crate::{Error, Result};
use std::time::Duration;

/// The dev server's address (`temporal server start-dev` listens here).
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:7233";
/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The task queue used when none is configured.
pub const DEFAULT_TASK_QUEUE: &str = "wflo-tasks";

/// How activities are retried by the workflows of this crate.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ActivityRetry {
    /// Wait before the first retry.
    pub initial_interval: Duration,
    /// Each wait is the previous one times this (at least 1).
    pub backoff_coefficient: f64,
    /// The longest wait.
    pub maximum_interval: Duration,
    /// Attempts in all, the first included (at least 1).
    pub maximum_attempts: u32,
}

impl Default for ActivityRetry {
    /// 1 s, doubling, at most 30 s apart, 5 attempts.
    fn default() -> Self {
        ActivityRetry {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(30),
            maximum_attempts: 5,
        }
    }
}

impl ActivityRetry {
    /// A policy with `maximum_attempts` attempts `initial_interval` apart, doubling.
    pub fn new(maximum_attempts: u32, initial_interval: Duration) -> Self {
        ActivityRetry {
            initial_interval,
            maximum_attempts,
            maximum_interval: initial_interval.max(Duration::from_secs(30)),
            ..ActivityRetry::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.maximum_attempts == 0 {
            return Err(Error::InvalidConfig(
                "activity retry maximum_attempts must be at least 1".into(),
            ));
        }
        if self.initial_interval.is_zero() || self.maximum_interval < self.initial_interval {
            return Err(Error::InvalidConfig(
                "activity retry intervals must be positive and maximum_interval at least initial_interval".into(),
            ));
        }
        if !(self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0) {
            return Err(Error::InvalidConfig(format!(
                "activity retry backoff_coefficient {} must be a number of at least 1",
                self.backoff_coefficient
            )));
        }
        Ok(())
    }
}

/// Connection, namespace, task queue and worker settings. Build with [`TemporalConfig::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalConfig {
    pub(crate) address: url::Url,
    pub(crate) namespace: String,
    pub(crate) task_queue: String,
    pub(crate) identity: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_concurrent_workflow_tasks: usize,
    pub(crate) max_concurrent_activities: usize,
    pub(crate) max_cached_workflows: usize,
    pub(crate) sticky_queue_timeout: Duration,
    pub(crate) graceful_shutdown: Duration,
    pub(crate) activity_retry: ActivityRetry,
    pub(crate) activity_timeout: Duration,
}

impl TemporalConfig {
    /// Defaults: the dev server at `http://127.0.0.1:7233`, namespace `default`, task queue
    /// `wflo-tasks`, 100 concurrent workflow tasks and 100 concurrent activities, 1000 cached
    /// workflows, a 5 s connect timeout, a 10 s sticky-queue timeout, 30 s of graceful shutdown,
    /// the default [`ActivityRetry`], and a 5 minute start-to-close timeout per activity attempt.
    pub fn builder() -> TemporalConfigBuilder {
        TemporalConfigBuilder {
            address: DEFAULT_ADDRESS.to_string(),
            config: TemporalConfig {
                address: url::Url::parse(DEFAULT_ADDRESS).expect("the default address parses"),
                namespace: DEFAULT_NAMESPACE.into(),
                task_queue: DEFAULT_TASK_QUEUE.into(),
                identity: None,
                connect_timeout: Duration::from_secs(5),
                max_concurrent_workflow_tasks: 100,
                max_concurrent_activities: 100,
                max_cached_workflows: 1000,
                sticky_queue_timeout: Duration::from_secs(10),
                graceful_shutdown: Duration::from_secs(30),
                activity_retry: ActivityRetry::default(),
                activity_timeout: Duration::from_secs(300),
            },
        }
    }

    /// The server address.
    pub fn address(&self) -> &str {
        self.address.as_str()
    }
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The task queue workers poll and workflows start on.
    pub fn task_queue(&self) -> &str {
        &self.task_queue
    }
    /// The activity retry policy.
    pub fn activity_retry(&self) -> &ActivityRetry {
        &self.activity_retry
    }
    /// Concurrent workflow tasks per worker.
    pub fn max_concurrent_workflow_tasks(&self) -> usize {
        self.max_concurrent_workflow_tasks
    }
    /// Concurrent activities per worker.
    pub fn max_concurrent_activities(&self) -> usize {
        self.max_concurrent_activities
    }
    /// The same configuration on another task queue (validated).
    pub fn with_task_queue(&self, task_queue: impl Into<String>) -> Result<TemporalConfig> {
        let mut c = self.clone();
        c.task_queue = task_queue.into();
        check_name("task queue", &c.task_queue)?;
        Ok(c)
    }
}

/// Builder of [`TemporalConfig`]; [`build`](TemporalConfigBuilder::build) validates.
#[derive(Debug, Clone)]
pub struct TemporalConfigBuilder {
    address: String,
    config: TemporalConfig,
}

fn check_name(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() || value.chars().any(char::is_whitespace) || value.len() > 255 {
        return Err(Error::InvalidConfig(format!(
            "{what} `{value}` must be 1-255 characters without spaces"
        )));
    }
    Ok(())
}

impl TemporalConfigBuilder {
    /// The server, e.g. `http://127.0.0.1:7233` (`host:port` alone means plain http).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }
    /// The namespace (default `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }
    /// The task queue (default `wflo-tasks`).
    pub fn task_queue(mut self, task_queue: impl Into<String>) -> Self {
        self.config.task_queue = task_queue.into();
        self
    }
    /// The identity workers and clients report (default `{pid}@{hostname}`).
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.config.identity = Some(identity.into());
        self
    }
    /// How long connecting may take before the server counts as unreachable.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }
    /// Workflow tasks a worker runs at once.
    pub fn max_concurrent_workflow_tasks(mut self, n: usize) -> Self {
        self.config.max_concurrent_workflow_tasks = n;
        self
    }
    /// Activities a worker runs at once.
    pub fn max_concurrent_activities(mut self, n: usize) -> Self {
        self.config.max_concurrent_activities = n;
        self
    }
    /// Workflows a worker keeps in memory between tasks (0 disables caching).
    pub fn max_cached_workflows(mut self, n: usize) -> Self {
        self.config.max_cached_workflows = n;
        self
    }
    /// How long a task waits on a vanished worker's sticky queue before any worker may take it.
    pub fn sticky_queue_timeout(mut self, timeout: Duration) -> Self {
        self.config.sticky_queue_timeout = timeout;
        self
    }
    /// How long a shutting-down worker lets running activities finish before cancelling them.
    pub fn graceful_shutdown(mut self, period: Duration) -> Self {
        self.config.graceful_shutdown = period;
        self
    }
    /// How activities are retried.
    pub fn activity_retry(mut self, retry: ActivityRetry) -> Self {
        self.config.activity_retry = retry;
        self
    }
    /// Start-to-close timeout of one activity attempt (code activities add their own timeout).
    pub fn activity_timeout(mut self, timeout: Duration) -> Self {
        self.config.activity_timeout = timeout;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<TemporalConfig> {
        let raw = self.address.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| {
            Error::InvalidConfig(format!(
                "temporal address `{raw}` is not a URL ({e}); use e.g. http://127.0.0.1:7233"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::InvalidConfig(format!(
                "temporal address `{raw}` must be http://HOST:PORT or https://HOST:PORT"
            )));
        }
        self.config.address = url;
        check_name("namespace", &self.config.namespace)?;
        check_name("task queue", &self.config.task_queue)?;
        let c = &self.config;
        if c.max_concurrent_workflow_tasks < 2 || c.max_concurrent_activities == 0 {
            return Err(Error::InvalidConfig(
                "max_concurrent_workflow_tasks must be at least 2 and max_concurrent_activities at least 1".into(),
            ));
        }
        if c.connect_timeout.is_zero() || c.activity_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "connect_timeout and activity_timeout must be greater than zero".into(),
            ));
        }
        if c.sticky_queue_timeout < Duration::from_secs(1) {
            return Err(Error::InvalidConfig(
                "sticky_queue_timeout must be at least 1 second".into(),
            ));
        }
        c.activity_retry.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_dev_server_default_namespace_and_wflo_tasks() {
        let c = TemporalConfig::builder().build().unwrap();
        assert_eq!(c.address(), "http://127.0.0.1:7233/");
        assert_eq!(c.namespace(), "default");
        assert_eq!(c.task_queue(), "wflo-tasks");
        assert_eq!(c.max_concurrent_activities(), 100);
    }

    #[test]
    fn a_bare_host_port_means_http() {
        let c = TemporalConfig::builder()
            .address("localhost:7233")
            .build()
            .unwrap();
        assert_eq!(c.address(), "http://localhost:7233/");
    }

    #[test]
    fn bad_values_are_refused_with_what_to_do() {
        for b in [
            TemporalConfig::builder().address("ftp://x:1"),
            TemporalConfig::builder().address("http://"),
            TemporalConfig::builder().namespace(""),
            TemporalConfig::builder().task_queue("two words"),
            TemporalConfig::builder().max_concurrent_workflow_tasks(1),
            TemporalConfig::builder().max_concurrent_activities(0),
            TemporalConfig::builder().activity_retry(ActivityRetry::new(0, Duration::from_secs(1))),
            TemporalConfig::builder().activity_retry(ActivityRetry::new(3, Duration::ZERO)),
            TemporalConfig::builder().connect_timeout(Duration::ZERO),
        ] {
            let e = b.build().unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
            let text = e.to_string();
            assert!(text.starts_with(char::is_lowercase), "{text}");
            assert!(!text.ends_with('.'));
        }
    }

    #[test]
    fn with_task_queue_validates() {
        let c = TemporalConfig::builder().build().unwrap();
        assert_eq!(c.with_task_queue("q-1").unwrap().task_queue(), "q-1");
        assert!(c.with_task_queue(" ").is_err());
    }
}
