//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in wflo-llm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was refused before anything was sent.
    #[error("invalid chat request: {0}")]
    InvalidRequest(String),

    /// A configuration value was refused when the config or provider was built.
    #[error("invalid provider configuration: {0}")]
    InvalidConfig(String),

    /// A real provider was built without an API key.
    #[error(
        "no api key for provider {provider}; set {env_var} or pass the key in the provider configuration"
    )]
    MissingApiKey {
        /// Provider name ("openai", "anthropic").
        provider: String,
        /// The environment variable the facade reads the key from.
        env_var: &'static str,
    },

    /// No provider is registered under this name.
    #[error("unknown llm provider {name:?}; use one of: {known}")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },

    /// The provider answered with a non-success HTTP status (after any retries).
    #[error(
        "{provider} returned http {status} from {url} after {attempts} attempt(s): {body}{}",
        status_hint(*status)
    )]
    Status {
        /// Provider name.
        provider: String,
        /// HTTP status code.
        status: u16,
        /// The URL that answered (without its query).
        url: String,
        /// The response body, truncated.
        body: String,
        /// How many attempts were made.
        attempts: u32,
        /// The provider's request id, when it sent one.
        request_id: Option<String>,
    },

    /// The request timed out (after any retries).
    #[error(
        "{provider} request timed out after {attempts} attempt(s) (timeout {timeout:?}); raise the timeout or retry later"
    )]
    Timeout {
        /// Provider name.
        provider: String,
        /// How many attempts were made.
        attempts: u32,
        /// The configured total timeout of one attempt.
        timeout: Duration,
    },

    /// The provider could not be reached or the connection broke (after any retries).
    #[error(
        "{provider} could not be reached after {attempts} attempt(s): {message}; check the base url and the network"
    )]
    Connection {
        /// Provider name.
        provider: String,
        /// How many attempts were made.
        attempts: u32,
        /// What the HTTP client reported.
        message: String,
    },

    /// The provider answered, but the body is not the JSON it should be.
    #[error("{provider} sent a malformed response (http {status}): {reason}; body: {body}")]
    MalformedResponse {
        /// Provider name.
        provider: String,
        /// HTTP status code of the answer.
        status: u16,
        /// Why it could not be read.
        reason: String,
        /// The response body, truncated.
        body: String,
    },

    /// The circuit breaker of this provider and model is open: the call was refused unsent.
    #[error("circuit open for {provider}/{model} after repeated failures; retry in {retry_in:?}")]
    CircuitOpen {
        /// Provider name.
        provider: String,
        /// Model name.
        model: String,
        /// Time until the breaker lets a trial call through.
        retry_in: Duration,
    },

    /// A streaming response broke or carried an error event.
    #[error("{provider} stream failed: {message}")]
    Stream {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
    },

    /// The replay cassette has no response for this request.
    #[error(
        "request {hash} is not in cassette {cassette}; record it first with the replay provider in record mode"
    )]
    CassetteMiss {
        /// sha256 (hex) of the request's canonical JSON.
        hash: String,
        /// The cassette file.
        cassette: String,
    },

    /// The cassette file could not be read or written.
    #[error("cassette {cassette}: {message}")]
    Cassette {
        /// The cassette file.
        cassette: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// True for failures a later call might not see (429, 5xx, timeouts, connection errors,
    /// an open breaker).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::Timeout { .. } | Error::Connection { .. } | Error::CircuitOpen { .. } => true,
            _ => false,
        }
    }

    /// The number of HTTP attempts behind this error, when it came from a call.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Error::Status { attempts, .. }
            | Error::Timeout { attempts, .. }
            | Error::Connection { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

/// What to check after an HTTP status that usually means a wrong setting.
fn status_hint(status: u16) -> &'static str {
    match status {
        404 => {
            "; check the base url: an OpenAI-compatible one ends where the SDKs expect it \
             (usually `/v1`, e.g. http://HOST/v1), an Anthropic one is the server root \
             (http://HOST, or http://HOST/v1), and check the model name"
        }
        401 | 403 => "; check the api key",
        _ => "",
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes total)", &s[..end], s.len())
}
