use crate::{Error, Result};
use std::time::Duration;

/// The image `cargo xtask sandbox-image` builds (and `docker/sandbox/Dockerfile` describes).
pub const DEFAULT_IMAGE: &str = "wflo-sandbox-python:3.11";

/// The socket tried when none is configured.
pub const DEFAULT_DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Resource limits of one container.
///
/// Start from [`Limits::default`] and change fields; every builder that takes a `Limits`
/// validates it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Memory in bytes; swap is set to the same value, so memory + swap = memory (no swap).
    pub memory_bytes: u64,
    /// CPUs (e.g. 0.5), enforced as `NanoCpus`.
    pub cpus: f64,
    /// Maximum number of processes and threads (`PidsLimit`).
    pub pids: u32,
    /// Bytes kept of stdout and, separately, of stderr; beyond that output is dropped and the
    /// result flags the truncation.
    pub output_bytes: usize,
    /// Size of the tmpfs mounted at /tmp.
    pub tmp_bytes: u64,
    /// Size of the tmpfs mounted at /workspace.
    pub workspace_bytes: u64,
    /// `nofile` ulimit: open file descriptors.
    pub open_files: u32,
    /// `fsize` ulimit: the largest file a process may write, in bytes.
    pub file_size_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 * 1024 * 1024,
            cpus: 1.0,
            pids: 64,
            output_bytes: 1024 * 1024,
            tmp_bytes: 64 * 1024 * 1024,
            workspace_bytes: 64 * 1024 * 1024,
            open_files: 256,
            file_size_bytes: 64 * 1024 * 1024,
        }
    }
}

pub(crate) fn positive_u64(limit: &'static str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(Error::InvalidLimit {
            limit,
            value: value.to_string(),
            reason: "must be positive",
        });
    }
    Ok(())
}

pub(crate) fn check_memory(value: u64) -> Result<()> {
    positive_u64("memory", value)?;
    if value < MIN_MEMORY {
        return Err(Error::InvalidLimit {
            limit: "memory",
            value: value.to_string(),
            reason: "must be at least 6 MiB (docker's minimum)",
        });
    }
    Ok(())
}

pub(crate) fn check_cpus(value: f64) -> Result<()> {
    if !value.is_finite() || value <= 0.0 {
        return Err(Error::InvalidLimit {
            limit: "cpus",
            value: value.to_string(),
            reason: "must be a positive number",
        });
    }
    if !(0.01..=1024.0).contains(&value) {
        return Err(Error::InvalidLimit {
            limit: "cpus",
            value: value.to_string(),
            reason: "must be between 0.01 and 1024",
        });
    }
    Ok(())
}

pub(crate) fn check_timeout(value: Duration) -> Result<()> {
    if value.is_zero() {
        return Err(Error::InvalidLimit {
            limit: "timeout",
            value: format!("{value:?}"),
            reason: "must be positive",
        });
    }
    Ok(())
}

impl Limits {
    /// Checks every field: all positive, memory at least docker's 6 MiB minimum.
    pub fn validate(&self) -> Result<()> {
        check_memory(self.memory_bytes)?;
        check_cpus(self.cpus)?;
        positive_u64("pids", u64::from(self.pids))?;
        positive_u64("output", self.output_bytes as u64)?;
        positive_u64("tmp", self.tmp_bytes)?;
        positive_u64("workspace", self.workspace_bytes)?;
        positive_u64("open files", u64::from(self.open_files))?;
        positive_u64("file size", self.file_size_bytes)?;
        Ok(())
    }
}

/// How a [`crate::SandboxRuntime`] reaches Docker and runs containers. Build with
/// [`SandboxConfig::builder`].
///
/// What one request may bring (environment, /workspace files, stdin) is capped independently
/// of this configuration, by [`crate::ExecRequestBuilder::build`]: see [`crate::ExecRequest`] and
/// [`crate::MAX_ENV_VARS`], [`crate::MAX_ENV_VAR_BYTES`], [`crate::MAX_ENV_BYTES`],
/// [`crate::MAX_FILES`], [`crate::MAX_FILES_BYTES`], [`crate::MAX_STDIN_BYTES`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub(crate) image: String,
    pub(crate) docker_socket: String,
    pub(crate) api_timeout: Duration,
    pub(crate) default_timeout: Duration,
    pub(crate) max_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) pool_size: usize,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) max_pools: usize,
    pub(crate) prewarm: bool,
    pub(crate) timeout_is_error: bool,
    pub(crate) scope: String,
    pub(crate) sweep_on_start: bool,
    pub(crate) orphan_age: Option<Duration>,
    pub(crate) remove_in_background: bool,
}

impl SandboxConfig {
    /// A builder with the defaults: image [`DEFAULT_IMAGE`], socket [`DEFAULT_DOCKER_SOCKET`],
    /// timeout 30 s (at most 300 s), [`Limits::default`], a warm pool of 2 per limit profile
    /// (idle timeout 5 min, at most 4 profiles), orphans swept at start.
    pub fn builder() -> SandboxConfigBuilder {
        SandboxConfigBuilder {
            config: SandboxConfig {
                image: DEFAULT_IMAGE.into(),
                docker_socket: DEFAULT_DOCKER_SOCKET.into(),
                api_timeout: Duration::from_secs(120),
                default_timeout: Duration::from_secs(30),
                max_timeout: Duration::from_secs(300),
                limits: Limits::default(),
                pool_size: 2,
                pool_idle_timeout: Duration::from_secs(300),
                max_pools: 4,
                prewarm: true,
                timeout_is_error: false,
                scope: "default".into(),
                sweep_on_start: true,
                orphan_age: None,
                remove_in_background: true,
            },
        }
    }

    /// The image containers run.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The Docker socket this runtime talks to.
    pub fn docker_socket(&self) -> &str {
        &self.docker_socket
    }

    /// The default limits of a request.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The longest timeout a request may ask for.
    pub fn max_timeout(&self) -> Duration {
        self.max_timeout
    }

    /// The label value that separates this runtime's containers from other runtimes' for the
    /// orphan sweep.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// How old a labelled container of this scope must be before the start-up sweep removes
    /// it: explicit, or the longest a live runtime keeps one (pool idle timeout + maximum
    /// timeout) plus a minute.
    pub fn orphan_age(&self) -> Duration {
        self.orphan_age
            .unwrap_or(self.pool_idle_timeout + self.max_timeout + Duration::from_secs(60))
    }
}

/// Builder of [`SandboxConfig`]; [`SandboxConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct SandboxConfigBuilder {
    config: SandboxConfig,
}

impl SandboxConfigBuilder {
    /// Image to run (default [`DEFAULT_IMAGE`]).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.config.image = image.into();
        self
    }

    /// Docker socket: `unix:///path` or a plain path (default [`DEFAULT_DOCKER_SOCKET`]).
    /// Environment variables such as `DOCKER_HOST` are not read here; the caller decides.
    pub fn docker_socket(mut self, socket: impl Into<String>) -> Self {
        self.config.docker_socket = socket.into();
        self
    }

    /// Timeout of a single Docker API call (default 120 s).
    pub fn api_timeout(mut self, timeout: Duration) -> Self {
        self.config.api_timeout = timeout;
        self
    }

    /// Timeout of a request that sets none (default 30 s). A timed-out run returns at most
    /// about 5 s after it, whatever the program prints.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default_timeout = timeout;
        self
    }

    /// The longest timeout a request may ask for (default 300 s).
    pub fn max_timeout(mut self, timeout: Duration) -> Self {
        self.config.max_timeout = timeout;
        self
    }

    /// Limits of a request that sets none.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Warm containers kept per limit profile (default 2; 0 turns the pool off).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.config.pool_size = size;
        self
    }

    /// A warm container unused this long is removed; a pool unused this long is not refilled
    /// until it is used again (default 5 min).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.pool_idle_timeout = timeout;
        self
    }

    /// How many distinct limit profiles get a warm pool (default 4); others run cold.
    pub fn max_pools(mut self, pools: usize) -> Self {
        self.config.max_pools = pools;
        self
    }

    /// Fill the pool of the default limits when the runtime starts (default true).
    pub fn prewarm(mut self, prewarm: bool) -> Self {
        self.config.prewarm = prewarm;
        self
    }

    /// Report a timeout as [`Error::TimedOut`] instead of a result with `timed_out` set
    /// (default false).
    pub fn timeout_is_error(mut self, yes: bool) -> Self {
        self.config.timeout_is_error = yes;
        self
    }

    /// Label value (`wflo.scope`) this runtime's containers carry; the orphan sweep only
    /// touches containers of its own scope (default `default`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.config.scope = scope.into();
        self
    }

    /// Sweep orphans of this scope when the runtime starts (default true).
    pub fn sweep_on_start(mut self, yes: bool) -> Self {
        self.config.sweep_on_start = yes;
        self
    }

    /// Age from which the start-up sweep treats a container of this scope as an orphan
    /// (default: see [`SandboxConfig::orphan_age`]).
    pub fn orphan_age(mut self, age: Duration) -> Self {
        self.config.orphan_age = Some(age);
        self
    }

    /// Return the result as soon as the program has ended and remove the container in the
    /// background (default true: removal costs tens of milliseconds that the caller need not
    /// wait for). [`crate::SandboxRuntime::flush`] and [`crate::SandboxRuntime::shutdown`] wait
    /// for background removals. With false, `execute` returns after the container is gone.
    pub fn remove_in_background(mut self, yes: bool) -> Self {
        self.config.remove_in_background = yes;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<SandboxConfig> {
        let c = self.config;
        if c.image.trim().is_empty() {
            return Err(Error::InvalidConfig("the image name is empty".into()));
        }
        let path = c
            .docker_socket
            .strip_prefix("unix://")
            .unwrap_or(&c.docker_socket);
        if !path.starts_with('/') {
            return Err(Error::InvalidConfig(format!(
                "docker socket {} is not a unix socket path; give unix:///path/to/docker.sock",
                c.docker_socket
            )));
        }
        check_timeout(c.default_timeout)?;
        check_timeout(c.max_timeout)?;
        check_timeout(c.api_timeout)?;
        if c.default_timeout > c.max_timeout {
            return Err(Error::TimeoutTooLong {
                requested: c.default_timeout,
                max: c.max_timeout,
            });
        }
        if c.pool_idle_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "the pool idle timeout is zero; give a positive duration or set pool_size(0)"
                    .into(),
            ));
        }
        c.limits.validate()?;
        let scope_ok = !c.scope.is_empty()
            && c.scope.len() <= 64
            && c.scope
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !scope_ok {
            return Err(Error::InvalidConfig(format!(
                "scope `{}` must be 1-64 characters of letters, digits, '-', '_' or '.'",
                c.scope
            )));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        let c = SandboxConfig::builder().build().unwrap();
        assert_eq!(c.image(), DEFAULT_IMAGE);
        assert_eq!(c.orphan_age(), Duration::from_secs(300 + 300 + 60));
    }

    #[test]
    fn default_timeout_over_max_is_refused() {
        let err = SandboxConfig::builder()
            .max_timeout(Duration::from_secs(5))
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::TimeoutTooLong { .. }), "{err}");
    }

    #[test]
    fn bad_limits_are_refused() {
        let mut l = Limits {
            cpus: -1.0,
            ..Limits::default()
        };
        let err = SandboxConfig::builder()
            .default_limits(l.clone())
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidLimit { limit: "cpus", .. }),
            "{err}"
        );
        l.cpus = 1.0;
        l.pids = 0;
        let err = SandboxConfig::builder()
            .default_limits(l)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidLimit { limit: "pids", .. }),
            "{err}"
        );
    }

    #[test]
    fn tcp_socket_and_bad_scope_are_refused() {
        assert!(matches!(
            SandboxConfig::builder()
                .docker_socket("tcp://1.2.3.4:2375")
                .build(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            SandboxConfig::builder().scope("a b").build(),
            Err(Error::InvalidConfig(_))
        ));
    }
}
