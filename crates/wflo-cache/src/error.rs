//! The one error type of wflo-cache.

use std::time::Duration;

/// Errors of the Redis client, the locks and the response cache. Messages are lower-case and say
/// what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL cannot be parsed or uses an unsupported scheme.
    #[error(
        "invalid redis url `{url}`: {reason}; use redis://[user:password@]host:port[/db] \
         or rediss:// for tls"
    )]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made to the server (refused, no route, dns, tls handshake).
    #[error(
        "cannot reach redis at {url}: {reason}; check that redis-server runs there \
         (`cargo xtask services up redis`) and that host, port and tls scheme are right"
    )]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// The server refused the credentials (AUTH / HELLO failed).
    #[error(
        "redis at {url} refused the login: {reason}; check the user name and password \
         in the url (redis://user:password@host:port)"
    )]
    Auth {
        /// The URL, password redacted.
        url: String,
        /// The server's reason.
        reason: String,
    },
    /// A command got no answer within the configured timeout.
    #[error(
        "redis did not answer `{command}` within {after:?}; check the server's load \
         or raise the command timeout"
    )]
    Timeout {
        /// The command that timed out.
        command: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The connection broke during a call or the server is down; the client reconnects in the
    /// background, so a later call may succeed.
    #[error(
        "the connection to redis was lost during `{command}`: {reason}; the client reconnects \
         by itself, retry once the server is back"
    )]
    ConnectionLost {
        /// The command that was running.
        command: &'static str,
        /// The client's reason.
        reason: String,
    },
    /// The server answered with an error.
    #[error("redis refused `{command}`: {reason}")]
    Redis {
        /// The command.
        command: &'static str,
        /// The server's or client's reason.
        reason: String,
    },
    /// Lock options are unusable (zero TTL, renewal not shorter than the TTL).
    #[error("invalid lock options: {0}")]
    InvalidLockOptions(String),
    /// A lock name or cache namespace has characters that are not allowed.
    #[error("invalid {what} `{value}`: use 1-200 characters among a-z A-Z 0-9 _ - . : /")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        value: String,
    },
    /// `acquire` waited until its deadline and the lock stayed held by someone else.
    #[error(
        "lock `{name}` is still held by another owner after waiting {waited:?}; retry later or raise the deadline"
    )]
    LockTimeout {
        /// The lock name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A value could not be serialized for the cache.
    #[error("cannot serialize the value for the cache: {0}")]
    Serialize(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the error is about reaching the server (unreachable, lost connection, timeout):
    /// such calls may succeed when retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::ConnectionLost { .. } | Error::Timeout { .. }
        )
    }
}
