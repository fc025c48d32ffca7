use crate::ExecutionResult;
use std::time::Duration;

/// Everything that can go wrong in this crate.
///
/// Request problems ([`Error::UnknownLanguage`], [`Error::InvalidLimit`],
/// [`Error::TimeoutTooLong`], [`Error::InvalidEnvName`], [`Error::InvalidFile`],
/// [`Error::InputTooLarge`]) are found before any container starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Docker engine did not answer on the socket that was tried.
    #[error(
        "cannot reach the docker engine at {socket}: {reason}; start one with \
         `cargo xtask services up docker` (or `dockerd &`), or point \
         SandboxConfig::builder().docker_socket(..) at a running engine"
    )]
    DaemonUnreachable {
        /// The socket that was tried, e.g. `unix:///var/run/docker.sock`.
        socket: String,
        /// What the connection attempt reported.
        reason: String,
    },

    /// The sandbox image is not present in the engine.
    #[error(
        "sandbox image {image} is missing; build it with `cargo xtask sandbox-image` \
         (or `docker build -t {image} docker/sandbox` where a registry answers)"
    )]
    ImageMissing {
        /// The image reference that was looked up.
        image: String,
    },

    /// The request named a language this crate does not run.
    #[error("unknown language `{name}`; use python or bash")]
    UnknownLanguage {
        /// The name as given.
        name: String,
    },

    /// A limit was zero, negative or not a number.
    #[error("invalid {limit} limit {value}: {reason}")]
    InvalidLimit {
        /// Which limit (memory, cpus, pids, output, timeout, ...).
        limit: &'static str,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },

    /// The request's timeout is over the runtime's configured maximum.
    #[error(
        "timeout {requested:?} is over the configured maximum {max:?}; ask for less or raise \
         SandboxConfig::builder().max_timeout(..)"
    )]
    TimeoutTooLong {
        /// The timeout the request asked for.
        requested: Duration,
        /// The configured maximum.
        max: Duration,
    },

    /// An environment variable name is not a valid identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    #[error(
        "invalid environment variable name `{name}`: use letters, digits and _ only, not starting with a digit"
    )]
    InvalidEnvName {
        /// The name as given.
        name: String,
    },

    /// A file for /workspace has an unusable path.
    #[error("invalid workspace file path `{path}`: {reason}")]
    InvalidFile {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The request's environment, workspace files or stdin are over one of the input caps
    /// [`crate::ExecRequestBuilder::build`] checks ([`crate::MAX_ENV_VARS`],
    /// [`crate::MAX_ENV_VAR_BYTES`], [`crate::MAX_ENV_BYTES`], [`crate::MAX_FILES`],
    /// [`crate::MAX_FILES_BYTES`], [`crate::MAX_STDIN_BYTES`]).
    #[error("{what} is {actual}{unit}, over the cap of {cap}{unit} ({cap_name}); {hint}")]
    InputTooLarge {
        /// What is over its cap, e.g. `the number of environment variables` or
        /// ``environment variable `KEY` (NAME=VALUE)``.
        what: String,
        /// The request's count or size.
        actual: usize,
        /// The cap.
        cap: usize,
        /// `""` for a count, `" bytes"` for a size.
        unit: &'static str,
        /// The constant that holds the cap, e.g. `MAX_ENV_VARS`.
        cap_name: &'static str,
        /// What to do instead.
        hint: &'static str,
    },

    /// The runtime configuration is inconsistent.
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfig(String),

    /// The program ran past its timeout and the runtime was configured to report that as an
    /// error (`SandboxConfig::builder().timeout_is_error(true)`). The container was killed and
    /// removed; the partial result is attached.
    #[error("execution timed out after {:?}; the container was killed", .0.duration)]
    TimedOut(Box<ExecutionResult>),

    /// A Docker Engine API call failed.
    #[error("docker {operation} failed: {message}; check the engine with `docker info`")]
    Docker {
        /// The operation, e.g. `create container`.
        operation: &'static str,
        /// The engine's (or client's) message.
        message: String,
    },

    /// The runtime was shut down.
    #[error("the sandbox runtime was shut down; create a new SandboxRuntime")]
    ShutDown,
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether running the same request again later may succeed: the Docker engine did not
    /// answer (it may be starting or restarting). A refused request, a missing image, a
    /// program that ran past its timeout and a shut-down runtime fail the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::DaemonUnreachable { .. })
    }

    pub(crate) fn docker(operation: &'static str, err: bollard::errors::Error) -> Self {
        Error::Docker {
            operation,
            message: err.to_string(),
        }
    }
}
